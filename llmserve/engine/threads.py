"""On the CPU, torch's intra-op threads belong to one engine's decode thread; every other thread computes with one.

Why, measured: docs/engine.md ("One thread pool"). `claim` on a decode thread, `confine` on the thread building it.
"""

# torch's CPU wheels run their intra-op parallelism on GNU OpenMP, which gives every thread that starts a parallel
# region a pool of its own, kept for that thread's life. While the process has more pool threads than CPUs, libgomp
# cuts the time idle workers spin from about 300,000 turns to 100, so they sleep between the many small parallel
# regions of a decode step and each region pays a futex wake-up. On 2 cores one other thread that had run a forward
# with 2 threads (setup's, a request's) took the embedded model's step from 21 ms to 33-44 ms. So the decode thread
# computes with every thread and the others with one: only one pool exists.

from __future__ import annotations

import logging
import threading

import torch

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_threads: int | None = None  # torch's intra-op threads when this module first confined a thread
_owner: threading.Thread | None = None  # the decode thread computing with them


def confine() -> None:
    """From now on this thread, and every thread torch first sees after, computes with one intra-op thread."""
    global _threads
    with _lock:
        if _threads is None:
            _threads = torch.get_num_threads()
    torch.set_num_threads(1)


def claim() -> int:
    """On a decode thread: take torch's intra-op threads if no other living decode thread has them; the count it
    computes with (1 when another has them: two pools would slow both)."""
    global _owner
    with _lock:
        taken = _held_elsewhere()
        if not taken:
            _owner = threading.current_thread()
        threads = 1 if taken else _threads or torch.get_num_threads()
    if taken:
        logger.info("%s computes with one CPU thread: %s has torch's threads", threading.current_thread().name, _owner)
    # torch sets a thread's count from its process-wide one the first time that thread asks: asking first keeps the
    # count set here this thread's own when the builder then confines itself (which sets the process-wide one to 1).
    torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


def release() -> None:
    """A decode thread that ends gives its claim back."""
    global _owner
    with _lock:
        if _owner is threading.current_thread():
            _owner = None


def share() -> None:
    """Before torch work on a thread that is no decode thread: confine it while a decode thread has the threads."""
    if _held_elsewhere():
        confine()


def _held_elsewhere() -> bool:
    """Whether another living decode thread has torch's threads."""
    owner = _owner
    return owner is not None and owner.is_alive() and owner is not threading.current_thread()
