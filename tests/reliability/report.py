"""Write the figures table of docs/reliability.md from the last run's recorded figures:
``python -m tests.reliability.report`` (after ``pytest tests/reliability``)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.reliability.figures import load

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
ORDER = [f"R{i}" for i in range(1, 12)] + [f"S{i}" for i in range(1, 7)]


def table() -> str:
    data = load()
    rows = ["| id | test | figure on the last run | when |", "|---|---|---|---|"]
    for figure in ORDER:
        tests = data.get(figure)
        if not tests:
            rows.append(f"| {figure} | (no test yet) | | |")
            continue
        for test, entry in sorted(tests.items()):
            rows.append(f"| {figure} | `{test}` | {entry['result']} | {entry['at']} |")
    return "\n".join(rows)


def main() -> None:
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(f"{BEGIN}\n{table()}\n{END}", text))
    print(table())


if __name__ == "__main__":
    main()
