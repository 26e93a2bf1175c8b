"""Load test: simulated users streaming answers over SSE from the local Cog server or from Replicate.

Each concurrency level runs its users at once; every user sends its next request as soon as the last one ends,
until the level has sent its requests or run out of time. The pure pieces (target and input parsing, SSE
decoding, percentiles, statistics, the report) are tested without a server. `main()` is what scripts/loadtest runs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ipaddress
import json
import logging
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .config import PROJECT_ROOT, ReplicateSettings
from .cost import EXAMPLE_GPU_PRICES_PER_HOUR, Costs, Throughput, api_costs, break_even_utilisation, gpu_costs
from .cost import users_per_instance as instance_users
from .errors import ErrorCode, LLMServeError, LoadTestError
from .openapi import SCHEMA_PATH
from .replicate_ops import make_client
from .targets import REPLICATE_REF

logger = logging.getLogger(__name__)

DEFAULT_PREGUNTA = "¿Qué es el aprendizaje automático?"
# Short answers keep a sweep quick; raise it (--input max_new_tokens=...) to load the decode loop longer.
DEFAULT_MAX_NEW_TOKENS = 64
DEPLOYMENT_PREFIX = "replicate-deployment:"
MODEL_PREFIX = "replicate:"
# A 409 right after a prediction ends is common (coglet frees the slot a moment after `completed`): back off briefly.
BUSY_BACKOFF_S = (0.05, 1.0)

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


# ---------------------------------------------------------------- what to load and with what


@dataclass(frozen=True)
class Target:
    kind: str  # "local", "replicate-deployment" or "replicate-model"
    address: str  # the server's base URL, OWNER/NAME for a deployment, OWNER/MODEL[:VERSION] for a model

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def prediction_ref(self) -> dict[str, str]:
        """The keyword that `replicate.Client.predictions.create` takes for this target."""
        if self.kind == "replicate-deployment":
            return {"deployment": self.address}
        model, _, version = self.address.partition(":")
        return {"version": version} if version else {"model": model}


_DEPLOYMENT_RE = re.compile(r"[\w.-]+/[\w.-]+")


def parse_target(url: str) -> Target:
    """A loopback server URL, `replicate-deployment:OWNER/NAME` or `replicate:OWNER/MODEL[:VERSION]`."""
    if url.startswith(DEPLOYMENT_PREFIX):
        ref = url.removeprefix(DEPLOYMENT_PREFIX)
        if not _DEPLOYMENT_RE.fullmatch(ref):
            raise _bad_target(f"{ref!r} is not a deployment name.", f"Write {DEPLOYMENT_PREFIX}OWNER/NAME.")
        return Target("replicate-deployment", ref)
    if url.startswith(MODEL_PREFIX):
        ref = url.removeprefix(MODEL_PREFIX)
        if not REPLICATE_REF.fullmatch(ref):
            raise _bad_target(
                f"{ref!r} is not a Replicate model.",
                f"Write {MODEL_PREFIX}OWNER/MODEL:VERSION (the version id from the model's page), "
                f"or {MODEL_PREFIX}OWNER/MODEL for a model Replicate runs without a version.",
            )
        return Target("replicate-model", ref)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad_target(
            f"{url!r} is neither a server URL nor a Replicate target.",
            f"Pass the local server's base URL, like http://127.0.0.1:5000, or {DEPLOYMENT_PREFIX}OWNER/NAME, "
            f"or {MODEL_PREFIX}OWNER/MODEL:VERSION.",
        )
    if not is_loopback(parts.hostname):
        raise _bad_target(
            f"{parts.hostname} is not this machine: scripts/loadtest loads only servers on loopback "
            "(127.0.0.1, ::1, localhost).",
            f"Run it where the server runs, or load a Replicate deployment with {DEPLOYMENT_PREFIX}OWNER/NAME.",
        )
    base = f"{parts.scheme}://{parts.netloc}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad_target(f"{url!r} has a path.", f"Give the server's base URL ({base}); /predictions is added to it.")
    return Target("local", base)


def _bad_target(problem: str, fix: str) -> LoadTestError:
    return LoadTestError(ErrorCode.BadLoadTarget, "--url", problem, fix)


def _bad_option(option: str, problem: str, fix: str) -> LoadTestError:
    return LoadTestError(ErrorCode.BadLoadOption, option, problem, fix)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def concurrency_levels(spec: str) -> list[int]:
    """`8` -> 1, 2, 4, 8 (powers of two, then N); `1,4,8` -> exactly those."""
    try:
        numbers = [int(part) for part in spec.split(",")]
    except ValueError:
        raise _bad_option(
            "--users", f"{spec!r} is not a number.", "Give a number of users (8) or a list (1,4,8)."
        ) from None
    if any(n < 1 for n in numbers):
        raise _bad_option("--users", f"{spec!r} has a level below 1 user.", "Give levels of at least 1 user.")
    if len(numbers) > 1:
        return sorted(set(numbers))
    top = numbers[0]
    levels = [2**i for i in range(top.bit_length()) if 2**i < top]
    return levels + [top]


def schema_input_types(schema: Mapping[str, Any]) -> dict[str, str]:
    """Input name -> JSON type, from an OpenAPI document like .cog/openapi_schema.json."""
    properties = schema["components"]["schemas"]["Input"]["properties"]
    return {name: prop.get("type", "string") for name, prop in properties.items()}


def load_input_types(path: Path = PROJECT_ROOT / SCHEMA_PATH) -> dict[str, str]:
    try:
        return schema_input_types(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise _bad_option(
            "--input", f"the predictor's inputs cannot be read from {path} ({e}).", "Run scripts/openapi_schema."
        ) from e


def build_inputs(pregunta: str, pairs: Sequence[str], types: Mapping[str, str]) -> dict[str, Any]:
    """The request's inputs: pregunta, a short max_new_tokens, then each NAME=VALUE typed by the schema."""
    inputs: dict[str, Any] = {"pregunta": pregunta, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in types:
            raise _bad_option("--input", f"{pair!r} is not NAME=VALUE for an input of the predictor.",
                              f"Use one of {', '.join(types)}.")  # fmt: skip
        kind = types[name]
        try:
            inputs[name] = int(raw) if kind == "integer" else float(raw) if kind == "number" else raw
        except ValueError:
            expected = "an integer" if kind == "integer" else "a number"
            raise _bad_option("--input", f"{pair!r}: {name} takes {expected}.", f"Give {name} {expected}.") from None
    return inputs


def gpu_price(value: str) -> float:
    """A price in dollars per hour, or the name of one of EXAMPLE_GPU_PRICES_PER_HOUR."""
    if value in EXAMPLE_GPU_PRICES_PER_HOUR:
        return EXAMPLE_GPU_PRICES_PER_HOUR[value]
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not price >= 0:
        names = ", ".join(f"{k} (${v}/h)" for k, v in EXAMPLE_GPU_PRICES_PER_HOUR.items())
        raise _bad_option(
            "--gpu-price-per-hour", f"{value!r} is not a price.", f"Give dollars per hour, or one of {names}."
        )
    return price


# ---------------------------------------------------------------- SSE and one request


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str


class SSEDecoder:
    """Server-Sent Events, one line at a time (without its line ending), as the WHATWG spec reads them."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        """The event that a blank line completes, else None."""
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


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

    def apply_cog_event(self, event: SSEEvent, now: float) -> bool:
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
        delay, max_delay = BUSY_BACKOFF_S
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
            await asyncio.sleep(delay)  # a client's backoff before it asks for a free slot again
            delay = min(2 * delay, max_delay)

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
        decoder = SSEDecoder()
        async for line in response.aiter_lines():
            event = decoder.feed(line)
            if event is not None and tracker.apply_cog_event(event, time.perf_counter()):
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


async def run_level(
    send: Sender, *, users: int, requests: int, duration_s: float, think_time_s: float = 0.0
) -> tuple[list[RequestResult], float]:
    """Run `users` at once until `requests` have been sent or `duration_s` has passed; return results and wall time."""
    level_start = time.perf_counter()
    deadline = level_start + duration_s
    issued = 0
    results: list[RequestResult] = []

    async def user_loop(user: int) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            index = issued
            issued += 1
            tracker = StreamTracker(started_at=time.perf_counter())
            try:
                await send(tracker)
            except Exception as e:  # a client bug must not end the run: record it and go on
                logger.exception("request %d failed in the client", index)
                tracker.fail(CLIENT_ERROR, f"{type(e).__name__}: {e}", time.perf_counter())
            results.append(request_result(tracker, users=users, user=user, index=index, level_start=level_start))
            if think_time_s:
                await asyncio.sleep(think_time_s)  # the simulated user reading the answer

    await asyncio.gather(*(user_loop(u) for u in range(users)))
    return sorted(results, key=lambda r: r.index), time.perf_counter() - level_start


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))


@dataclass(frozen=True)
class LevelStats:
    users: int
    requests: int  # sent
    ok: int
    errors: dict[str, int]  # error kind -> count
    wall_s: float
    requests_per_second: float  # successful requests over wall time
    latency_s: Percentiles  # successful requests, send to completed
    ttft_s: Percentiles  # successful requests, send to first chunk with text
    output_tokens: int  # of successful requests
    output_tokens_per_second: float  # over wall time: the instance's throughput
    input_tokens_per_request: float
    output_tokens_per_request: float
    server_tokens_per_second_p50: float | None  # median decode speed of one prediction, as the server measured it
    tokens_from_chunks: int  # successful requests without an output_token_count metric: their chunks were counted
    busy_retries: int

    def throughput(self) -> Throughput:
        return Throughput(
            requests_per_second=self.requests_per_second,
            output_tokens_per_second=self.output_tokens_per_second,
            input_tokens_per_request=self.input_tokens_per_request,
            output_tokens_per_request=self.output_tokens_per_request,
        )


def level_stats(users: int, results: Sequence[RequestResult], wall_s: float) -> LevelStats:
    ok = [r for r in results if r.status == OK]
    output_tokens = sum(r.output_tokens for r in ok)
    input_counts = [r.input_tokens for r in ok if r.input_tokens is not None]
    speeds = [r.server_tokens_per_second for r in ok if r.server_tokens_per_second]
    return LevelStats(
        users=users,
        requests=len(results),
        ok=len(ok),
        errors=dict(sorted(Counter(r.status for r in results if r.status != OK).items())),
        wall_s=wall_s,
        requests_per_second=len(ok) / wall_s if wall_s > 0 else 0.0,
        latency_s=Percentiles.of([r.latency_s for r in ok]),
        ttft_s=Percentiles.of([r.ttft_s for r in ok if r.ttft_s is not None]),
        output_tokens=output_tokens,
        output_tokens_per_second=output_tokens / wall_s if wall_s > 0 else 0.0,
        input_tokens_per_request=sum(input_counts) / len(input_counts) if input_counts else 0.0,
        output_tokens_per_request=output_tokens / len(ok) if ok else 0.0,
        server_tokens_per_second_p50=percentile(speeds, 50),
        tokens_from_chunks=sum(r.tokens_from == "chunks" for r in ok),
        busy_retries=sum(r.busy_retries for r in results),
    )


# ---------------------------------------------------------------- cost and report


@dataclass(frozen=True)
class CostReport:
    users: int  # the level whose throughput was priced
    level_had_errors: bool  # every level with answers had errors: the throughput is less certain
    throughput: Throughput
    gpu_price_per_hour: float
    gpu_label: str  # "gpu-t4 $0.81/h" for an example's name, else "$2.5/h"
    calls_per_user_per_day: float
    gpu: Costs
    users_per_instance: float
    api_input_price_per_million: float | None = None
    api_output_price_per_million: float | None = None
    api: Costs | None = None
    break_even_utilisation: float | None = None


def cost_report(
    levels: Sequence[LevelStats],
    *,
    gpu_price_per_hour: float,
    calls_per_user_per_day: float,
    gpu_name: str = "",
    api_output_price_per_million: float | None = None,
    api_input_price_per_million: float | None = None,
) -> CostReport | None:
    """Price the fastest level (req/s) among those without errors, else among all; None if nothing succeeded."""
    answered = [s for s in levels if s.ok and s.output_tokens]
    # A level cut short by errors (409s come back in milliseconds) has too few answers to measure a throughput.
    best = max([s for s in answered if not s.errors] or answered, key=lambda s: s.requests_per_second, default=None)
    if best is None:
        return None
    throughput = best.throughput()
    gpu = gpu_costs(
        price_per_hour=gpu_price_per_hour, throughput=throughput, calls_per_user_per_day=calls_per_user_per_day
    )
    report = CostReport(
        users=best.users,
        level_had_errors=bool(best.errors),
        throughput=throughput,
        gpu_price_per_hour=gpu_price_per_hour,
        gpu_label=f"{gpu_name} ${gpu_price_per_hour:g}/h".lstrip(),
        calls_per_user_per_day=calls_per_user_per_day,
        gpu=gpu,
        users_per_instance=instance_users(throughput, calls_per_user_per_day),
    )
    if api_output_price_per_million is None:
        return report
    # One API price given: a blended price for every token.
    input_price = api_output_price_per_million if api_input_price_per_million is None else api_input_price_per_million
    api = api_costs(
        input_price_per_million=input_price,
        output_price_per_million=api_output_price_per_million,
        throughput=throughput,
        calls_per_user_per_day=calls_per_user_per_day,
    )
    return replace(
        report,
        api_input_price_per_million=input_price,
        api_output_price_per_million=api_output_price_per_million,
        api=api,
        break_even_utilisation=break_even_utilisation(gpu, api) if api.per_request > 0 else None,
    )


def money(value: float) -> str:
    """Dollars with three significant digits below $1, cents above, no cents from $100."""
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = 2 - math.floor(math.log10(value))
    return f"${value:.{decimals}f}"


def format_cost_report(report: CostReport) -> str:
    t = report.throughput
    which = "every level had errors: a rough guide" if report.level_had_errors else "the fastest level without errors"
    lines = [
        f"Cost at {report.users} user{'s' if report.users != 1 else ''} ({which}): {t.requests_per_second:.3g} req/s, "
        f"{t.output_tokens_per_second:.3g} output tok/s, {t.input_tokens_per_request:.0f} input + "
        f"{t.output_tokens_per_request:.1f} output tokens per request.",
        "Assumes one instance billed by the hour and kept busy at this throughput (full utilisation).",
    ]
    header = ["", f"GPU {report.gpu_label}"]
    if report.api is not None:
        in_price, out_price = report.api_input_price_per_million, report.api_output_price_per_million
        header.append(f"API ${in_price:g} in / ${out_price:g} out per 1M tokens")
    rows = [header]
    for label, key in (
        ("per request", "per_request"),
        ("per 1,000 requests", "per_1k_requests"),
        ("per 1M output tokens", "per_million_output_tokens"),
        (f"per user per day ({report.calls_per_user_per_day:g} calls)", "per_user_per_day"),
    ):
        rows.append([label] + [money(getattr(c, key)) for c in (report.gpu, report.api) if c is not None])
    lines.append(_align(rows))
    lines.append(
        f"One instance serves {report.users_per_instance:,.0f} users a day at {report.calls_per_user_per_day:g} calls "
        "each, spread evenly over 24 hours."
    )
    share = report.break_even_utilisation
    if share is not None and share <= 1:
        lines.append(f"Break-even utilisation {share:.1%}: the GPU is cheaper than the API when busy more than that.")
    elif share is not None:
        lines.append(f"Break-even utilisation {share:.1%}: the GPU costs more than the API even when always busy.")
    return "\n".join(lines)


def format_table(levels: Sequence[LevelStats]) -> str:
    """The summary: one row per concurrency level."""
    header = (
        "users", "sent", "ok", "errors", "req/s", "p50 s", "p95 s", "p99 s",
        "TTFT p50", "TTFT p95", "TTFT p99", "out tok/s", "decode tok/s",
    )  # fmt: skip
    rows = [header]
    for s in levels:
        errors = ", ".join(f"{kind} {n}" for kind, n in s.errors.items()) or "0"
        rows.append(
            (
                str(s.users),
                str(s.requests),
                str(s.ok),
                errors,
                f"{s.requests_per_second:.3g}",
                *(_seconds(v) for v in (s.latency_s.p50, s.latency_s.p95, s.latency_s.p99)),
                *(_seconds(v) for v in (s.ttft_s.p50, s.ttft_s.p95, s.ttft_s.p99)),
                f"{s.output_tokens_per_second:.3g}",
                "-" if s.server_tokens_per_second_p50 is None else f"{s.server_tokens_per_second_p50:.3g}",
            )
        )
    return _align(rows)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _align(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def write_results(out: Path, payload: dict[str, Any], results: Sequence[RequestResult]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "results.json", out / "requests.csv"
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    names = [f.name for f in fields(RequestResult)]
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    return [json_path, csv_path]


def write_chart(levels: Sequence[LevelStats], path: Path, title: str) -> Path:
    """Latency and time to first token against users (left), throughput against users (right)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    users = [s.users for s in levels]

    def series(values: Sequence[float | None]) -> list[float]:
        return [math.nan if v is None else v for v in values]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, values, style in (
        ("latency p50", [s.latency_s.p50 for s in levels], "o-"),
        ("latency p95", [s.latency_s.p95 for s in levels], "o--"),
        ("TTFT p50", [s.ttft_s.p50 for s in levels], "s-"),
        ("TTFT p95", [s.ttft_s.p95 for s in levels], "s--"),
    ):
        left.plot(users, series(values), style, label=label)
    for s in levels:
        if s.errors and s.latency_s.p50 is not None:  # few answers behind this point: say why
            left.annotate(f"{sum(s.errors.values())}/{s.requests} errors", (s.users, s.latency_s.p50), fontsize=8,
                          xytext=(-4, -14), textcoords="offset points", ha="right")  # fmt: skip
    left.set(xlabel="concurrent users", ylabel="seconds", title="Latency against concurrency", xticks=users)
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend()
    right.plot(users, [s.requests_per_second for s in levels], "o-", color="tab:green", label="req/s")
    right.set(xlabel="concurrent users", ylabel="successful requests per second", title="Throughput", xticks=users)
    right.set_ylim(bottom=0)
    tokens = right.twinx()
    tokens.plot(users, [s.output_tokens_per_second for s in levels], "s--", color="tab:purple", label="output tok/s")
    tokens.set_ylabel("output tokens per second")
    tokens.set_ylim(bottom=0)
    right.legend(handles=right.get_lines() + tokens.get_lines(), loc="lower right")
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the run


async def wait_until_ready(client: httpx.AsyncClient, base_url: str, timeout: float) -> None:
    """Poll /health-check until READY: no slot still held by an earlier prediction."""
    deadline = time.monotonic() + timeout
    status = None
    while True:
        try:
            status = (await client.get(f"{base_url}/health-check", timeout=10)).json().get("status")
        except (httpx.HTTPError, json.JSONDecodeError) as e:
            raise LoadTestError(
                ErrorCode.ServerNotReady,
                "--url",
                f"{base_url}/health-check cannot be read ({type(e).__name__}: {e}).",
                "Start the server first (e.g. MODEL_ID=/tmp/tiny scripts/serve --port 5000) and pass its URL.",
            ) from e
        if status == "READY":
            return
        if status in ("SETUP_FAILED", "DEFUNCT", "UNHEALTHY") or time.monotonic() > deadline:
            raise LoadTestError(
                ErrorCode.ServerNotReady,
                "--url",
                f"{base_url} is {status}, not READY (waited up to {timeout:g} s).",
                "Read the server's log; wait for the prediction it is running, or restart it.",
            )
        await asyncio.sleep(0.1)


async def run_sweep(
    target: Target,
    inputs: dict[str, Any],
    levels: Sequence[int],
    *,
    requests: int,
    duration_s: float,
    timeout: float,
    retry_busy: bool = False,
    think_time_s: float = 0.0,
    replicate_client: Any = None,
) -> list[tuple[LevelStats, list[RequestResult]]]:
    """Every concurrency level in turn; a local server is left idle (READY) between levels and at the end."""
    out = []
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10), limits=limits, trust_env=False) as http:
        if target.is_local:
            send: Sender = LocalSender(http, target.address, inputs, timeout=timeout, retry_busy=retry_busy)
        else:
            send = ReplicateSender(replicate_client, target, inputs, timeout=timeout)
        for users in levels:
            if target.is_local:
                await wait_until_ready(http, target.address, timeout)
            results, wall = await run_level(
                send, users=users, requests=requests, duration_s=duration_s, think_time_s=think_time_s
            )
            stats = level_stats(users, results, wall)
            logger.info(
                "%d users: %d/%d ok in %.1f s, %.3g req/s, errors %s",
                users, stats.ok, stats.requests, wall, stats.requests_per_second, stats.errors or "none",
            )  # fmt: skip
            out.append((stats, results))
        if target.is_local:
            await wait_until_ready(http, target.address, timeout)
    return out


def main(argv: list[str] | None = None) -> int:
    examples = ", ".join(f"{name} = ${price}/h" for name, price in EXAMPLE_GPU_PRICES_PER_HOUR.items())
    parser = argparse.ArgumentParser(
        prog="scripts/loadtest",
        description="Load the local Cog server (loopback only) or a Replicate deployment with concurrent streamed "
        "predictions; report latency, time to first token, throughput, errors and cost.",
    )
    parser.add_argument(
        "--url",
        required=True,
        help=f"http://127.0.0.1:PORT, {DEPLOYMENT_PREFIX}OWNER/NAME or {MODEL_PREFIX}OWNER/MODEL[:VERSION]",
    )
    parser.add_argument(
        "--users", default="1", metavar="N", help="N: levels 1, 2, 4, ... N; or a list such as 1,4,8 (default 1)"
    )
    parser.add_argument("--requests", type=int, default=20, metavar="M", help="requests per level (default 20)")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for results.json, requests.csv, latency.png"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=120,
        metavar="S",
        help="seconds per level after which no request starts (default 120)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120, metavar="S", help="seconds one request may take (default 120)"
    )
    parser.add_argument("--pregunta", default=DEFAULT_PREGUNTA, help=f"the question (default {DEFAULT_PREGUNTA!r})")
    parser.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE",
        help=f"any other input of the predictor; max_new_tokens defaults to {DEFAULT_MAX_NEW_TOKENS} here",
    )  # fmt: skip
    parser.add_argument(
        "--retry-busy", action="store_true", help="retry HTTP 409 (all slots busy) with backoff instead of counting it"
    )
    parser.add_argument(
        "--think-time", type=float, default=0.0, metavar="S", help="seconds a user waits between requests (default 0)"
    )
    parser.add_argument(
        "--gpu-price-per-hour",
        default="gpu-t4",
        metavar="P",
        help=f"dollars per hour, or an example: {examples} (default gpu-t4)",
    )
    parser.add_argument(
        "--calls-per-user-per-day", type=float, default=20, metavar="N", help="for the cost per user (default 20)"
    )
    parser.add_argument(
        "--api-price-per-million-tokens",
        type=float,
        metavar="P",
        help="a pay-per-token API's output price, to compare with",
    )
    parser.add_argument(
        "--api-input-price-per-million-tokens",
        type=float,
        metavar="P",
        help="its input price (default: the output price)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "matplotlib"):  # one line per request; font cache notes
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        target = parse_target(args.url)
        levels = concurrency_levels(args.users)
        price = gpu_price(args.gpu_price_per_hour)
        inputs = build_inputs(args.pregunta, args.input, load_input_types())
        for name in ("requests", "duration", "timeout", "calls_per_user_per_day"):
            if not getattr(args, name) > 0:
                option = "--" + name.replace("_", "-")
                raise _bad_option(option, f"is {getattr(args, name)}.", "Give a number above 0.")
        # E4004 MissingApiToken before any request when REPLICATE_API_TOKEN is not set.
        client = None if target.is_local else make_client(ReplicateSettings.from_env())
        sweep = asyncio.run(
            run_sweep(
                target, inputs, levels, requests=args.requests, duration_s=args.duration, timeout=args.timeout,
                retry_busy=args.retry_busy, think_time_s=args.think_time, replicate_client=client,
            )
        )  # fmt: skip
    except LLMServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats = [s for s, _ in sweep]
    results = [r for _, rs in sweep for r in rs]
    report = cost_report(
        stats,
        gpu_price_per_hour=price,
        gpu_name=args.gpu_price_per_hour if args.gpu_price_per_hour in EXAMPLE_GPU_PRICES_PER_HOUR else "",
        calls_per_user_per_day=args.calls_per_user_per_day,
        api_output_price_per_million=args.api_price_per_million_tokens,
        api_input_price_per_million=args.api_input_price_per_million_tokens,
    )
    title = f"{target.address}: max_new_tokens={inputs['max_new_tokens']}, {args.requests} requests per level"
    payload = {
        "target": asdict(target),
        "inputs": inputs,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "levels": [asdict(s) for s in stats],
        "cost": None if report is None else asdict(report),
    }
    files = write_results(args.out, payload, results) + [write_chart(stats, args.out / "latency.png", title)]
    print("wrote " + ", ".join(str(p) for p in files))
    busy = sum(s.errors.get(AT_CAPACITY, 0) for s in stats)
    if busy:
        print(
            f"{busy} requests got HTTP 409 At capacity: more users than prediction slots, and Cog does not queue. "
            "Start the server with COG_MAX_CONCURRENCY of at least the number of users, or pass --retry-busy."
        )
    if any(s.tokens_from_chunks for s in stats):
        print("Some answers had no output_token_count metric: their tokens were counted as streamed chunks.")
    print()
    print(format_cost_report(report) if report else "No successful request: no cost to report.")
    print()
    print(format_table(stats))
    return 0 if any(s.ok for s in stats) else 1


if __name__ == "__main__":
    sys.exit(main())
