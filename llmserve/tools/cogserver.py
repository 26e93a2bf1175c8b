"""A client's side of a Cog HTTP server: its health, waiting until it is READY, backing off on 409, its SSE events."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import httpx
from httpx_sse import EventSource, ServerSentEvent

from ..config import PROJECT_ROOT

READY = "READY"
# States that a server does not leave by itself.
BROKEN = ("SETUP_FAILED", "DEFUNCT", "UNHEALTHY")


class NotReady(RuntimeError):
    """The server did not become READY: `status` is its last state; `answered` is False if it never answered."""

    def __init__(self, url: str, status: str | None, detail: str, *, answered: bool = True) -> None:
        self.url, self.status, self.detail, self.answered = url, status, detail, answered
        super().__init__(f"{url} is not READY ({status if answered else 'no answer'}): {detail}")


def health(url: str, *, timeout: float = 10) -> str | None:
    """The status that GET {url}/health-check reports; httpx.HTTPError or ValueError when it cannot be read."""
    return httpx.get(f"{url}/health-check", timeout=timeout, trust_env=False).json().get("status")


def wait_until_ready(
    url: str, *, timeout: float, starting: bool = False, process: subprocess.Popen | None = None, poll: float = 0.1
) -> None:
    """Poll /health-check until READY (a slot is free); NotReady when the server breaks or `timeout` passes.

    `starting`: the server is still booting, so an unanswered health check means "not yet"; `process`: its process.
    """
    deadline = time.monotonic() + timeout
    status, answered = None, False
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(url, status, f"its process exited with status {process.returncode}", answered=answered)
        try:
            status, answered = health(url), True
        except (httpx.HTTPError, ValueError) as e:
            if not starting:
                detail = f"{url}/health-check cannot be read ({type(e).__name__}: {e})"
                raise NotReady(url, None, detail, answered=False) from e
        if status == READY:
            return
        if status in BROKEN or time.monotonic() > deadline:
            raise NotReady(url, status, f"waited up to {timeout:g} s", answered=answered)
        time.sleep(poll)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(env: Mapping[str, str], *, timeout: float, log: IO[str] | None = None) -> Iterator[str]:
    """scripts/serve on a free port under `env`, READY, until the block ends; yields its base URL."""
    port = free_port()
    out = log if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(PROJECT_ROOT / "scripts" / "serve"), "--port", str(port)],
        env=dict(env),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server and its worker stop together
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, timeout=timeout, starting=True, process=process, poll=0.2)
        yield url
    finally:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=30)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # the whole group has exited already
        pass


@dataclass(frozen=True)
class Backoff:
    """How a client waits for a free prediction slot after HTTP 409 (Cog does not queue): doubling delays."""

    first: float = 0.05
    most: float = 1.0

    def delays(self, *, until: float | None = None) -> Iterator[float]:
        """Each wait in turn, until time.monotonic() passes `until` (never, by default)."""
        delay = self.first
        while until is None or time.monotonic() < until:
            yield delay
            delay = min(2 * delay, self.most)


def send_while_busy(
    send: Callable[[], httpx.Response],
    backoff: Backoff,
    *,
    until: float | None = None,
    on_busy: Callable[[], None] | None = None,
) -> httpx.Response:
    """`send()`, and again after each 409 with `backoff`'s delays until `until`; `on_busy` runs at the first 409."""
    delays = backoff.delays(until=until)
    busy = False
    while True:
        response = send()
        if response.status_code != 409 or (delay := next(delays, None)) is None:
            return response
        if not busy and on_busy is not None:
            on_busy()
        busy = True
        time.sleep(delay)


# SSE: the library keeps an event without data, which the WHATWG spec drops; Cog sends data with every event.


def iter_events(response: httpx.Response) -> Iterator[ServerSentEvent]:
    """The Server-Sent Events of a streamed response, as they arrive."""
    return (event for event in EventSource(response).iter_sse() if event.data)


async def aiter_events(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """iter_events() for an httpx.AsyncClient's response."""
    async for event in EventSource(response).aiter_sse():
        if event.data:
            yield event
