"""Shapes: how much of the waiting prompts one prefill forward takes (a token budget), and decode steps' row counts."""

from __future__ import annotations

from collections.abc import Sequence

# The budget of one prefill forward while streams decode, on CPU and on CUDA: the longest a prompt holds up running
# streams. On 2 CPU cores, 64 tokens of the embedded model take about 0.25 s in float32 (docs/engine.md).
PREFILL_TOKENS = {False: 64, True: 1024}
# While no stream decodes, nobody waits: a forward takes this many times the budget. Larger chunks prefill faster (on
# CPU a float32 product of 64 rows of falcon-rw-1b's width took 0.8x the time of 128 rows, not 0.5x).
IDLE_CHUNKS = 8


def plan(remaining: Sequence[int], *, budget: int, decoding: bool, chunked: bool) -> list[int]:
    """Tokens each of the first waiting prompts (their `remaining` counts, in arrival order) gives this forward."""
    if not remaining:
        return []
    if not chunked:  # the backend continues no prompt in chunks: one whole prompt a forward
        return [remaining[0]]
    budget *= 1 if decoding else IDLE_CHUNKS
    width = min(remaining[0], budget)  # every row is padded to the first's chunk
    rows = min(len(remaining), max(1, budget // width))
    return [min(n, width) for n in remaining[:rows]]


def bucket(rows: int, slots: int) -> int:
    """Round up to a power of two (capped at `slots`), so few distinct shapes are ever compiled."""
    size = 1
    while size < rows:
        size *= 2
    return min(size, slots)


def batch_sizes(slots: int) -> list[int]:
    """Every row count a decode step is run with, smallest first."""
    return sorted({bucket(rows, slots) for rows in range(1, slots + 1)})
