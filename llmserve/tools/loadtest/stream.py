"""One simulated request: what it saw (StreamTracker), its result row, and the senders for Cog and for Replicate."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from ..cogserver import Backoff, aiter_events
from .plan import Target

logger = logging.getLogger(__name__)

# A 409 right after a prediction ends is common (coglet frees the slot a moment after `completed`): back off briefly.
BUSY = Backoff(first=0.05, most=1.0)

# Outcomes other than "ok", counted per kind.
OK = "ok"
AT_CAPACITY = "at_capacity"  # HTTP 409: every prediction slot is busy; Cog does not queue
INVALID_INPUT = "invalid_input"  # HTTP 422: the schema refused an input
RATE_LIMITED = "rate_limited"  # HTTP 429 from Replicate
FAILED = "failed"  # the prediction ran and failed (its error says why)
CANCELED = "canceled"
TIMEOUT = "timeout"
CONNECTION = "connection"
NOT_STREAMING = "not_streaming"  # the server answered without SSE
STREAM_ENDED = "stream_ended"  # the stream closed before the prediction completed
CLIENT_ERROR = "client_error"  # a bug on this side; recorded so that the run goes on
_HTTP_KINDS = {409: AT_CAPACITY, 422: INVALID_INPUT, 429: RATE_LIMITED}


@dataclass
class StreamTracker:
    """What one request saw, filled in as its events arrive; times are time.perf_counter() readings."""

    started_at: float
    prediction_id: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    chunks: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str | None = None  # OK or an error kind, once finished
    error: str = ""
    busy_retries: int = 0

    def on_chunk(self, text: str, now: float) -> None:
        if text and self.first_token_at is None:
            self.first_token_at = now  # time to first token: the first chunk with text in it
        self.chunks += 1

    def on_completed(self, status: str, error: str | None, metrics: Mapping[str, Any], now: float) -> None:
        self.metrics.update(metrics)
        kinds = {"succeeded": OK, "failed": FAILED, "canceled": CANCELED}
        self.status = kinds.get(status, STREAM_ENDED)
        self.error = error or ("" if self.status == OK else f"prediction ended with status {status!r}")
        self.finished_at = now

    def fail(self, kind: str, message: str, now: float) -> None:
        self.status, self.error, self.finished_at = kind, message, now

    def apply_cog_event(self, event: ServerSentEvent, now: float) -> bool:
        """Apply one of Cog's SSE events (start, output, log, metric, completed); True once completed."""
        data = json.loads(event.data) if event.data else {}
        if event.event == "start":
            self.prediction_id = data.get("id")
        elif event.event == "output":
            self.on_chunk(data.get("chunk", "") if isinstance(data, dict) else str(data), now)
        elif event.event == "metric":
            name, value = data.get("name"), data.get("value")
            if data.get("mode") == "increment" and isinstance(value, int | float):
                self.metrics[name] = self.metrics.get(name, 0) + value
            else:
                self.metrics[name] = value
        elif event.event == "completed":
            self.on_completed(data.get("status", ""), data.get("error"), data.get("metrics") or {}, now)
            return True
        return False


@dataclass(frozen=True)
class RequestResult:
    users: int  # the concurrency level it ran in
    user: int
    index: int
    started_s: float  # since the level started
    status: str  # OK or an error kind
    latency_s: float  # from sending to the completed event (or to the error)
    ttft_s: float | None  # from sending to the first chunk with text
    chunks: int
    output_tokens: int  # the output_token_count metric, else the number of chunks
    tokens_from: str  # "metric" or "chunks"
    input_tokens: int | None
    server_tokens_per_second: float | None  # the tokens_per_second metric: the decode speed of this prediction
    busy_retries: int
    error: str


def request_result(tracker: StreamTracker, *, users: int, user: int, index: int, level_start: float) -> RequestResult:
    start = tracker.started_at
    end = tracker.finished_at if tracker.finished_at is not None else time.perf_counter()
    counted = tracker.metrics.get("output_token_count")
    return RequestResult(
        users=users,
        user=user,
        index=index,
        started_s=start - level_start,
        status=tracker.status or STREAM_ENDED,
        latency_s=end - start,
        ttft_s=None if tracker.first_token_at is None else tracker.first_token_at - start,
        chunks=tracker.chunks,
        output_tokens=int(counted) if counted is not None else tracker.chunks,
        tokens_from="metric" if counted is not None else "chunks",
        input_tokens=tracker.metrics.get("input_token_count"),
        server_tokens_per_second=tracker.metrics.get("tokens_per_second"),
        busy_retries=tracker.busy_retries,
        error=tracker.error,
    )


Sender = Callable[[StreamTracker], Awaitable[None]]


class LocalSender:
    """POST /predictions with Accept: text/event-stream to a Cog server on loopback."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, inputs: dict[str, Any], *, timeout: float, retry_busy: bool
    ) -> None:
        self.client, self.base_url, self.inputs = client, base_url, inputs
        self.timeout, self.retry_busy = timeout, retry_busy

    async def __call__(self, tracker: StreamTracker) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self._stream(tracker)
        except TimeoutError:
            tracker.fail(TIMEOUT, f"no completed event within {self.timeout:g} s", time.perf_counter())
            await self._cancel(tracker.prediction_id)
        except httpx.TimeoutException as e:
            tracker.fail(TIMEOUT, f"{type(e).__name__}: {e}", time.perf_counter())
        except httpx.TransportError as e:
            tracker.fail(CONNECTION, f"{type(e).__name__}: {e}", time.perf_counter())

    async def _stream(self, tracker: StreamTracker) -> None:
        delays = BUSY.delays()
        while True:
            async with self.client.stream(
                "POST",
                f"{self.base_url}/predictions",
                json={"input": self.inputs},
                headers={"Accept": "text/event-stream"},
            ) as response:
                if not (response.status_code == 409 and self.retry_busy):
                    await self._read(response, tracker)
                    return
            tracker.busy_retries += 1
            await asyncio.sleep(next(delays))  # a client's backoff before it asks for a free slot again

    @staticmethod
    async def _read(response: httpx.Response, tracker: StreamTracker) -> None:
        if response.status_code != 200:
            body = (await response.aread()).decode("utf-8", "replace")
            kind = _HTTP_KINDS.get(response.status_code, f"http_{response.status_code}")
            tracker.fail(kind, f"HTTP {response.status_code}: {body[:300]}", time.perf_counter())
            return
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            body = (await response.aread()).decode("utf-8", "replace")
            what = content_type or "no content type"
            message = f"answered {what}, not SSE: {body[:200]}. Start the server with scripts/serve"
            tracker.fail(NOT_STREAMING, message, time.perf_counter())
            return
        async for event in aiter_events(response):
            if tracker.apply_cog_event(event, time.perf_counter()):
                return
        tracker.fail(STREAM_ENDED, "the stream closed before the completed event", time.perf_counter())

    async def _cancel(self, prediction_id: str | None) -> None:
        """Free the slot that a timed-out prediction still holds."""
        if prediction_id is None:
            return
        try:
            await self.client.post(f"{self.base_url}/predictions/{prediction_id}/cancel", timeout=10)
        except httpx.HTTPError as e:
            logger.warning("could not cancel %s after its timeout: %s", prediction_id, e)


class ReplicateSender:
    """A streamed prediction through the replicate library: create(stream=True), its SSE stream, then its metrics."""

    def __init__(self, client: Any, target: Target, inputs: dict[str, Any], *, timeout: float) -> None:
        self.client, self.ref, self.inputs, self.timeout = client, target.prediction_ref(), inputs, timeout

    async def __call__(self, tracker: StreamTracker) -> None:
        from replicate.exceptions import ReplicateError
        from replicate.stream import ServerSentEvent

        try:
            async with asyncio.timeout(self.timeout):
                prediction = await self.client.predictions.async_create(input=self.inputs, stream=True, **self.ref)
                tracker.prediction_id = prediction.id
                async for event in prediction.async_stream():
                    if event.event == ServerSentEvent.EventType.OUTPUT:
                        tracker.on_chunk(str(event.data), time.perf_counter())
                    elif event.event == ServerSentEvent.EventType.DONE:
                        break
                done_at = time.perf_counter()
                await prediction.async_reload()  # the stream carries no status or metrics: the prediction does
                tracker.on_completed(prediction.status, prediction.error, prediction.metrics or {}, done_at)
        except TimeoutError:
            tracker.fail(TIMEOUT, f"no done event within {self.timeout:g} s", time.perf_counter())
            await self._cancel(tracker.prediction_id)
        except ReplicateError as e:
            kind = _HTTP_KINDS.get(e.status, f"http_{e.status}") if e.status else FAILED
            tracker.fail(kind, str(e), time.perf_counter())
        except RuntimeError as e:  # the library raises it for an `error` event on the stream
            tracker.fail(FAILED, str(e), time.perf_counter())
        except httpx.TimeoutException as e:
            tracker.fail(TIMEOUT, f"{type(e).__name__}: {e}", time.perf_counter())
        except httpx.TransportError as e:
            tracker.fail(CONNECTION, f"{type(e).__name__}: {e}", time.perf_counter())

    async def _cancel(self, prediction_id: str | None) -> None:
        from replicate.exceptions import ReplicateError

        if prediction_id is None:
            return
        try:
            await self.client.predictions.async_cancel(prediction_id)
        except (ReplicateError, httpx.HTTPError) as e:
            logger.warning("could not cancel %s after its timeout: %s", prediction_id, e)
