"""The reliability and security tier (issue 6): one module per figure of
../shared/RELIABILITY.md (R1-R11, S1-S6). Each test records the figure it produced with
:func:`tests.reliability.figures.record`; ``python -m tests.reliability.report`` writes
the table of docs/reliability.md from the last run."""
