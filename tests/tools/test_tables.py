"""The terminal tables every tool prints: numbers right-aligned after a left-aligned label, or all left."""

from __future__ import annotations

from llmserve.tools.tables import align

ROWS = [("set", "n", "score"), ("all", "50", "0.278"), ("aritmetica", "16", "0.5")]


def test_numbers_are_right_aligned_after_the_label():
    assert align(ROWS).splitlines() == [
        "set          n  score",
        "all         50  0.278",
        "aritmetica  16    0.5",
    ]


def test_every_column_left_aligned_without_trailing_spaces():
    assert align(ROWS, numbers_right=False).splitlines() == [
        "set         n   score",
        "all         50  0.278",
        "aritmetica  16  0.5",
    ]
