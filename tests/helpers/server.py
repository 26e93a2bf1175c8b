"""The real Cog server (coglet, via scripts/serve) as the HTTP tests drive it, through httpx and httpx-sse."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx

from llmserve.tools.cogserver import Backoff, health, iter_events, send_while_busy, wait_until_ready

# Prediction slots of the session's server: enough to show batching, capacity and cancel on 2 cores.
SLOTS = 2
# Health says READY while a slot is still being freed (coglet frees it a moment after `completed`), so a request
# sent at once can still get 409.
BUSY = Backoff()


@dataclass
class Server:
    url: str

    def health(self) -> str | None:
        return health(self.url)

    def wait_idle(self, timeout: float = 60) -> None:
        """Poll until READY, a slot free: coglet frees one a moment after a prediction's last event."""
        wait_until_ready(self.url, timeout=timeout, poll=0.05)

    def predict(self, *, wait_idle: bool = True, retry_busy: bool = False, **inputs) -> httpx.Response:
        """A synchronous prediction; `retry_busy` sends it again after a 409, as a client behind a queue would."""
        if wait_idle:
            self.wait_idle()

        def send() -> httpx.Response:
            return httpx.post(f"{self.url}/predictions", json={"input": inputs}, timeout=300, trust_env=False)

        return send_while_busy(send, BUSY, until=time.monotonic() + 60) if retry_busy else send()

    def stream(self, inputs: dict, prediction_id: str | None = None) -> AbstractContextManager[httpx.Response]:
        """Open an SSE prediction (PUT with an id, else POST); use it as a context manager."""
        self.wait_idle()
        method, path = ("PUT", f"/predictions/{prediction_id}") if prediction_id else ("POST", "/predictions")
        return httpx.stream(
            method,
            f"{self.url}{path}",
            json={"input": inputs},
            headers={"Accept": "text/event-stream"},
            timeout=300,
            trust_env=False,
        )


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """A text/event-stream response as (event, data) pairs, as they arrive."""
    return ((event.event, json.loads(event.data)) for event in iter_events(response))
