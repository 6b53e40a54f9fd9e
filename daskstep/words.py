"""Counts as words, for what users read: "1 step", "2 steps", "0 workers"."""

from __future__ import annotations


def plural(n: object, word: str, plural: str | None = None) -> str:
    """`n` and the word, plural unless n is 1; a count not known ("?") takes the plural."""
    return f"{n} {word if n == 1 else plural or word + 's'}"
