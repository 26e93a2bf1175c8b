"""A cancel signal that any thread can raise: the answer's engine request stops before its next decode step."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Cancel:
    """Set once, from any thread; each callback registered with `on_cancel` runs once, at once if already set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._set = False

    @property
    def is_set(self) -> bool:
        return self._set

    def on_cancel(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self._set:
                self._callbacks.append(callback)
                return
        callback()

    def cancel(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
