"""Cancel that reaches the answer under coglet 0.23.1, which cancels a future that has already completed."""

# For an async run() that returns a generator, coglet streams the generator after the coroutine's future is done,
# and on POST /predictions/<id>/cancel (or a dropped SSE client) calls `.cancel()` on that future: a no-op, so the
# answer went on to its end and held its slot. install() wraps `asyncio.run_coroutine_threadsafe`, which coglet
# looks up at each prediction, so that the future of a prediction (coglet's `_ctx_wrapper` coroutine) passes the
# cancel on to the Cancel registered for the generator run() returned. Pinned to coglet 0.23.1
# (requirements-dev.txt, cog.yaml's sdk_version); tests/real/test_cancel.py fails against the real server the day
# this stops working.

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterator
from concurrent.futures import Future

from ..request.cancel import Cancel

logger = logging.getLogger(__name__)

_PREDICTION_COROUTINE = "_ctx_wrapper"  # coglet 0.23.1 (and 0.22.0) wraps each prediction's coroutine in this
_original = None
# What run() returned -> how to stop it; weak, so a finished answer is not kept alive by this table.
_cancels: weakref.WeakKeyDictionary[Iterator[str], Cancel] = weakref.WeakKeyDictionary()


def cancellable(stream: Iterator[str], cancel: Cancel) -> Iterator[str]:
    """Register `cancel` as the way to stop `stream` when Cog cancels the prediction; returns `stream`."""
    _cancels[stream] = cancel
    return stream


def install() -> None:
    """Once per process (the Cog worker): make each prediction's future pass `cancel()` on to its output."""
    global _original
    if _original is not None:
        return
    _original = asyncio.run_coroutine_threadsafe

    def run_coroutine_threadsafe(coro, loop):
        future = _original(coro, loop)
        if getattr(coro, "__name__", "") == _PREDICTION_COROUTINE:
            _pass_cancel_on(future)
        return future

    asyncio.run_coroutine_threadsafe = run_coroutine_threadsafe


def _pass_cancel_on(future: Future) -> None:
    cancel_future = future.cancel

    def cancel() -> bool:
        if cancel_future():  # still running (in input moderation, say): asyncio cancels the coroutine itself
            return True
        if future.done() and not future.cancelled() and future.exception() is None:
            stop = _cancels.get(future.result())
            if stop is not None:
                logger.info("cancel: stopping the answer's generation")
                stop.cancel()
                return True
        return False

    future.cancel = cancel
