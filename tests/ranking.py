"""One comparison of two ranked hit lists from different code paths: the same scores within
a tolerance, and the same ids except where neighbouring scores are closer than it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

TOL = 1e-6  # two paths (gemv and gemm, numpy and torch, HTTP and embedded) differ by ~1e-7


def tie_groups(scores: Sequence[float], tol: float = TOL) -> list[range]:
    """Runs of positions whose neighbouring scores differ by less than ``tol``."""
    groups: list[range] = []
    start = 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or scores[i - 1] - scores[i] >= tol:
            groups.append(range(start, i))
            start = i
    return groups


def assert_same_ranking(
    got_ids: Sequence[str | int],
    got_scores: Sequence[float],
    want_ids: Sequence[str | int],
    want_scores: Sequence[float],
    tol: float = TOL,
) -> None:
    """Scores equal within ``tol``; ids equal position by position, except inside a run of
    near-equal scores, which must hold the same ids in any order. The last run may end in
    ids the other path ranked just past k, so only its length is compared."""
    assert list(got_scores) == pytest.approx(list(want_scores), abs=tol)
    assert len(got_ids) == len(want_ids)
    groups = tie_groups(want_scores, tol)
    for n, group in enumerate(groups):
        got = {got_ids[i] for i in group}
        want = {want_ids[i] for i in group}
        last = n == len(groups) - 1 and len(group) > 1
        assert last or got == want, (list(group), sorted(map(str, got)), sorted(map(str, want)))
