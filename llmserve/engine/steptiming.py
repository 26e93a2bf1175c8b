"""Timing the ways a CPU decode step can run, at warm-up: which kernels (oneDNN's or ATen's) and weights are fastest
depends on the batch size and the CPU, so each backend measures them (docs/engine.md: "Decode steps by size")."""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

Way = TypeVar("Way")
logger = logging.getLogger(__name__)

TIMED_STEPS = 3  # per way and batch size, after one untimed step (kernels, oneDNN's primitives)

_lock = threading.Lock()
_off = 0  # steps running with oneDNN switched off, on every thread (two engines' decode threads)


def has_kernel_choice(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether oneDNN's and ATen's kernels are both there to choose from: bf16 or fp16 on a CPU with oneDNN."""
    return device.type == "cpu" and dtype != torch.float32 and torch.backends.mkldnn.is_available()


def choose(backend, batch_sizes: Sequence[int], ways: dict[str, Way], run: Callable[[Way, torch.Tensor], object],
           vocab: int) -> dict[int, Way]:  # fmt: skip
    """For each batch size, smallest first, with that many free slots prefilled: the way `run(way, tokens)` took
    least time. ATen's kernels lose more, the more rows, so they are not timed after they lost; once one way is left,
    the larger sizes get it untimed. Runs on the decode thread while no request holds a slot."""
    ways, chosen, report = dict(ways), {}, []
    ids = [(37 * i + 11) % vocab for i in range(8)]
    for rows in sorted(batch_sizes):
        if len(ways) == 1:
            chosen[rows] = next(iter(ways.values()))
            continue
        backend.prefill([(slot, ids) for slot in range(rows)])
        tokens = torch.full((rows,), ids[0], dtype=torch.int64, device=backend.device)
        best, medians = fastest({name: lambda way=way, tokens=tokens: run(way, tokens) for name, way in ways.items()})
        for slot in range(rows):
            backend.release(slot)
        chosen[rows] = ways[best]
        report.append(f"{rows}: {best} (" + ", ".join(f"{n} {t * 1000:.0f}" for n, t in medians.items()) + " ms)")
        if best != "ATen":
            ways.pop("ATen", None)
    logger.info("decode steps by rows: %s", "; ".join(report))
    return chosen


def fastest(ways: dict[str, Callable[[], object]]) -> tuple[str, dict[str, float]]:
    """Run each way once, then TIMED_STEPS times in turn (a drifting machine's speed falls on all alike): the name
    with the lowest median time, and every median in seconds."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for step in range(TIMED_STEPS + 1):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            if step:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return min(medians, key=medians.get), medians


@contextlib.contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """oneDNN off for one step when `enabled` is False (a process-wide switch: docs/engine.md), back on once no
    step on any thread still wants it off; left alone when it is on, or when it was off before (torch's setting)."""
    global _off
    if enabled or (_off == 0 and not torch.backends.mkldnn.enabled):
        yield
        return
    with _lock:
        _off += 1
        torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        with _lock:
            _off -= 1
            if _off == 0:
                torch.backends.mkldnn.enabled = True
