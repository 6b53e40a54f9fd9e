"""Counts as users read them: "1 step", "2 steps" (issue 19: "1 steps")."""

from __future__ import annotations

import pytest

from daskstep.words import plural
from entrypoint.waiter import _workers


@pytest.mark.parametrize(
    ("n", "word", "says"),
    [(1, "step", "1 step"), (0, "step", "0 steps"), (2, "slurm job", "2 slurm jobs"),
     ("?", "worker", "? workers")],
)  # fmt: skip
def test_plural(n: object, word: str, says: str) -> None:
    assert plural(n, word) == says


def test_the_entrypoint_says_it_in_the_same_words() -> None:
    assert [_workers(n) for n in (0, 1, 2)] == [plural(n, "worker") for n in (0, 1, 2)]
