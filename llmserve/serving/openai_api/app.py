"""The FastAPI app: GET /v1/models, POST /v1/chat/completions (JSON, or SSE with `stream`), /metrics, /health."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ...engine.scheduler import QueueFull
from ...errors import InputError, ModerationError
from ...moderation.pipeline import moderate_stream
from ...moderation.policy import input_texts, refusal
from ...request.answer import Answerer, Prepared, Stats
from ...request.cancel import Cancel
from ...request.params import LIMITS
from .metrics import Metrics
from .schema import APIError, ChatCompletionRequest, to_request

_FINISH = {"eos": "stop", "stop_sequence": "stop", "max_new_tokens": "length", "canceled": "stop"}


class Service:
    """What the routes share: the answerer and moderator, the metrics, and the threads that read answers."""

    def __init__(self, answerer: Answerer, moderator=None, *, api_key: str | None = None) -> None:
        self.answerer, self.moderator, self.api_key = answerer, moderator, api_key
        self.created = int(time.time())
        scheduler = answerer.engine.scheduler
        slots = scheduler.slots
        self.metrics = Metrics(slots=slots, slots_in_use=scheduler.active, queue_depth=scheduler.waiting)
        # One thread per answer being read, as many as the engine admits (running and waiting), and some to spare.
        self.pool = ThreadPoolExecutor(max_workers=2 * slots + 4, thread_name_prefix="openai-answer")

    def prepare(self, body: ChatCompletionRequest) -> tuple[Any, Prepared]:
        """The request and its prompt; without max_tokens, as many tokens as the context has left (up to 4096)."""
        request, given = to_request(body)
        try:
            up_to = None if given else int(LIMITS["max_new_tokens"].le)
            return request, self.answerer.prepare(request, fill_context_up_to=up_to)
        except InputError as e:
            raise APIError.from_input_error(e, offset=len(body.messages)) from e

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Run:
    """One answer, read on a worker thread into an asyncio queue: ("chunk", text)..., then end, blocked or error."""

    def __init__(self, service: Service, request, prepared: Prepared, decision) -> None:
        self.cancel = Cancel()
        self.stats: Stats | None = None
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        chunks = service.answerer.stream(prepared, on_finish=self._finished, cancel=self.cancel, raise_incomplete=False)
        if service.moderator is not None:
            chunks = moderate_stream(chunks, service.moderator.output_filter(request.pregunta), input_decision=decision)
        self._loop.run_in_executor(service.pool, self._pump, chunks)

    def _finished(self, stats: Stats) -> None:
        self.stats = stats

    def _put(self, kind: str, value: Any) -> None:
        self._loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def _pump(self, chunks) -> None:
        try:
            for chunk in chunks:
                self._put("chunk", chunk)
                if self.cancel.is_set:
                    break
            self._put("end", None)
        except ModerationError as e:
            self._put("blocked", e)
        except Exception as e:  # noqa: BLE001 - the client gets it as an error; the server goes on
            self._put("error", e)
        finally:
            chunks.close()


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="llmserve OpenAI-compatible API", docs_url=None, redoc_url=None)
    metrics = service.metrics

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        metrics.requests.labels("invalid").inc()
        first = (error.errors() or [{}])[0]
        param = _param(first.get("loc", ()))
        message = f"{param or 'the request body'}: {first.get('msg', 'is invalid')}."
        return JSONResponse(APIError(400, message, param=param, code="invalid_request").body(), status_code=400)

    def authorize(request: Request) -> None:
        if service.api_key is None:
            return
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {service.api_key}".encode()):
            raise APIError(401, "Missing or wrong API key: send Authorization: Bearer <key>.", code="invalid_api_key")

    @app.get("/health")
    async def health() -> JSONResponse:
        engine = service.answerer.engine
        status = 200 if engine.healthy else 503
        return JSONResponse({"status": "ok" if engine.healthy else f"unhealthy: {engine.fault}"}, status_code=status)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [_model(service)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        authorize(request)
        return _model(service)  # one model is served, whatever it is called (as LM Studio answers)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        authorize(request)
        started = time.perf_counter()
        try:
            parsed, prepared = await asyncio.to_thread(service.prepare, body)
        except APIError:
            metrics.requests.labels("invalid").inc()
            raise
        decision = None
        if service.moderator is not None:
            decision = await asyncio.to_thread(service.moderator.check_input, input_texts(parsed))
            if not decision.allowed:
                metrics.requests.labels("blocked").inc()
                metrics.moderation_blocks.labels("input").inc()
                refused = refusal(decision)
                message = f"{refused.problem} {refused.fix}"
                raise APIError(400, message, param="messages", code="content_filter")
        run = _Run(service, parsed, prepared, decision)
        try:
            first = await run.queue.get()  # an overloaded engine is told before any header is sent
            if first[0] == "error":
                _count(service, run, first, started)
                raise _server_error(first[1])
            meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": _model(service)["id"]}
            if body.stream:
                usage = bool((body.stream_options or {}).get("include_usage"))
                events = _events(service, run, first, meta, started, usage)
                return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            return JSONResponse(await _whole(service, run, first, meta, started, request))
        except asyncio.CancelledError:  # the server is stopping (or the request was dropped): free the slot
            run.cancel.cancel()
            raise

    return app


async def _whole(service: Service, run: _Run, event, meta: dict, started: float, request: Request) -> dict[str, Any]:
    text = []
    while event[0] == "chunk":
        text.append(event[1])
        if await request.is_disconnected():  # nobody will read the answer: free the slot
            run.cancel.cancel()
            service.metrics.requests.labels("canceled").inc()
            raise APIError(499, "the client closed the connection", code="client_closed")
        event = await run.queue.get()
    reason = _count(service, run, event, started)
    if event[0] == "error":
        raise _server_error(event[1])
    message = {"role": "assistant", "content": "".join(text)}
    choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
    return {**meta, "object": "chat.completion", "choices": [choice], "usage": _usage(run.stats)}


async def _events(service: Service, run: _Run, event, meta: dict, started: float, usage: bool) -> AsyncIterator[str]:
    """The SSE stream: a role chunk, content chunks, the finish chunk, usage if asked, then [DONE]."""

    def chunk(delta: dict | None, reason: str | None = None) -> str:  # None: the usage chunk
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason}]
        body = {**meta, "object": "chat.completion.chunk", "choices": choices}
        if delta is None:
            body["usage"] = _usage(run.stats)
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while event[0] == "chunk":
            yield chunk({"content": event[1]})
            event = await run.queue.get()
        reason = _count(service, run, event, started)
        if event[0] == "error":
            yield f"data: {json.dumps(_server_error(event[1]).body())}\n\n"
        else:
            yield chunk({}, reason)
            if usage:
                yield chunk(None)
        yield "data: [DONE]\n\n"
    finally:  # the client went away (or the stream ended): stop generating, free the slot
        if not run.cancel.is_set and event[0] == "chunk":
            run.cancel.cancel()
            service.metrics.requests.labels("canceled").inc()


def _count(service: Service, run: _Run, event: tuple[str, Any], started: float) -> str | None:
    """Record how the request ended; its OpenAI finish_reason."""
    metrics, stats = service.metrics, run.stats
    kind = event[0]
    reason = {"blocked": "content_filter", "error": None}.get(kind)
    if kind == "end":
        reason = _FINISH.get(stats.stop_reason if stats else "", "stop")
    if kind == "blocked":
        metrics.moderation_blocks.labels("output").inc()
    outcome = reason or ("overloaded" if isinstance(event[1], QueueFull) else "error")
    metrics.requests.labels(outcome).inc()
    metrics.latency.observe(time.perf_counter() - started)
    if stats is not None:
        metrics.input_tokens.inc(stats.input_token_count)
        metrics.output_tokens.inc(stats.output_token_count)
        if stats.time_to_first_token is not None:
            metrics.ttft.observe(stats.time_to_first_token)
    return reason


def _server_error(error: BaseException) -> APIError:
    if isinstance(error, QueueFull):
        return APIError(503, f"{error}: retry in a moment.", code="overloaded")
    return APIError(500, f"{type(error).__name__}: {error}", code="engine_error")


def _usage(stats: Stats | None) -> dict[str, int]:
    prompt = stats.input_token_count if stats else 0
    completion = stats.output_token_count if stats else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _model(service: Service) -> dict[str, Any]:
    return {"id": service.answerer.model_name, "object": "model", "created": service.created, "owned_by": "llmserve"}


def _param(loc) -> str | None:
    """pydantic's error location ("body", "messages", 0, "role") as OpenAI names it: messages[0].role."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None
