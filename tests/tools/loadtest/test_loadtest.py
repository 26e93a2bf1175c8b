"""The load test's pure parts: targets, inputs, SSE, percentiles, statistics, the report, and its HTTP client
against a small fake Cog server on 127.0.0.1 (the real server is exercised in tests/http/test_loadtest.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from httpx_sse import ServerSentEvent

from llmserve.tools import cli
from llmserve.tools.cogserver import iter_events
from llmserve.tools.loadtest.errors import LoadTestError
from llmserve.tools.loadtest.plan import (
    DEFAULT_MAX_NEW_TOKENS,
    build_inputs,
    concurrency_levels,
    gpu_price,
    load_input_types,
    parse_target,
)
from llmserve.tools.loadtest.report import cost_report, format_cost_report, format_table, money
from llmserve.tools.loadtest.run import run_level
from llmserve.tools.loadtest.stats import LevelStats, Percentiles, level_stats, percentile
from llmserve.tools.loadtest.stream import (
    AT_CAPACITY,
    CLIENT_ERROR,
    CONNECTION,
    FAILED,
    INVALID_INPUT,
    NOT_STREAMING,
    OK,
    STREAM_ENDED,
    TIMEOUT,
    LocalSender,
    RequestResult,
    StreamTracker,
    request_result,
)
from tests.helpers.localserver import QuietHandler, local_server

# What coglet 0.23.1 sent for one streamed prediction of the tiny model (logs shortened).
COGLET_STREAM = """\
event: start
data: {"id":"pred_18ea461a0dd721c7","status":"processing"}

event: log
data: {"data":"INFO llmserve.answer: generating\\n","source":"stderr"}

event: output
data: {"chunk":"","index":0}

event: output
data: {"chunk":"Pr","index":1}

event: output
data: {"chunk":" quick","index":2}

event: metric
data: {"mode":"replace","name":"input_token_count","value":77}

event: metric
data: {"mode":"replace","name":"output_token_count","value":8}

event: completed
data: {"id":"pred_18ea461a0dd721c7","metrics":{"input_token_count":77,"output_token_count":8,"predict_time":0.035,\
"tokens_per_second":281.4},"output":["","Pr"," quick"],"status":"succeeded"}

"""


def decode(text: str) -> list[ServerSentEvent]:
    """The events of a streamed response with this body, as the load test's client reads them."""
    return list(iter_events(httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)))


# ---------------------------------------------------------------- targets and options


@pytest.mark.parametrize(
    "url, base",
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://localhost:5000/", "http://localhost:5000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://127.0.0.2:443", "https://127.0.0.2:443"),
    ],
)
def test_loopback_urls_are_accepted(url, base):
    target = parse_target(url)
    assert (target.kind, target.address, target.is_local) == ("local", base, True)


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://10.0.0.5:5000", "E6001 BadLoadTarget: --url: 10.0.0.5 is not this machine"),
        ("http://0.0.0.0:5000", "0.0.0.0 is not this machine"),
        ("https://api.replicate.com", "api.replicate.com is not this machine"),
        ("http://localhost.example.com:5000", "is not this machine"),
        ("http://127.0.0.1:5000/predictions", "has a path. Give the server's base URL (http://127.0.0.1:5000)"),
        ("127.0.0.1:5000", "Pass the local server's base URL"),
        ("ftp://127.0.0.1", "Pass the local server's base URL"),
        ("replicate-deployment:just-a-name", "Write replicate-deployment:OWNER/NAME"),
        ("replicate:owner/model:not-a-version", "Write replicate:OWNER/MODEL:VERSION"),
    ],
)
def test_other_urls_are_refused_with_the_fix(url, message):
    with pytest.raises(LoadTestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_target(url)


def test_replicate_targets_map_to_the_library_keywords():
    deployment = parse_target("replicate-deployment:acme/pregunta-prod")
    assert (deployment.kind, deployment.is_local) == ("replicate-deployment", False)
    assert deployment.prediction_ref() == {"deployment": "acme/pregunta-prod"}
    assert parse_target("replicate:acme/pregunta:5c7d5dc6dd8b").prediction_ref() == {"version": "5c7d5dc6dd8b"}
    assert parse_target("replicate:meta/llama").prediction_ref() == {"model": "meta/llama"}


@pytest.mark.parametrize(
    "spec, levels", [("1", [1]), ("2", [1, 2]), ("8", [1, 2, 4, 8]), ("6", [1, 2, 4, 6]), ("8,1,4,4", [1, 4, 8])]
)
def test_concurrency_levels(spec, levels):
    assert concurrency_levels(spec) == levels


@pytest.mark.parametrize("spec", ["0", "two", "1,-2", ""])
def test_bad_concurrency_levels_are_refused(spec):
    with pytest.raises(LoadTestError, match="E6002 BadLoadOption: --users"):
        concurrency_levels(spec)


def test_inputs_are_typed_by_the_committed_schema():
    types = load_input_types()
    assert types["max_new_tokens"] == "integer" and types["temperature"] == "number" and types["pregunta"] == "string"
    inputs = build_inputs("¿Hola?", ["temperature=0", "max_new_tokens=16", "stop_sequences=\\n", "seed=7"], types)
    assert inputs == {
        "pregunta": "¿Hola?",
        "max_new_tokens": 16,
        "temperature": 0.0,
        "stop_sequences": "\\n",
        "seed": 7,
    }
    assert build_inputs("x", [], types)["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS


@pytest.mark.parametrize(
    "pair, message",
    [("colour=red", "Use one of pregunta, system_prompt"), ("top_k=many", "top_k takes an integer"), ("x", "NAME")],
)
def test_bad_inputs_are_refused(pair, message):
    with pytest.raises(LoadTestError, match=message):
        build_inputs("x", [pair], load_input_types())


def test_gpu_price_takes_dollars_or_an_example_name():
    assert gpu_price("gpu-t4") == 0.81
    assert gpu_price("2.5") == 2.5
    for bad in ("free", "-1", "nan"):
        with pytest.raises(LoadTestError, match="gpu-h100"):
            gpu_price(bad)


# ---------------------------------------------------------------- SSE and one request


def test_sse_decoder_reads_coglet_events():
    events = decode(COGLET_STREAM)
    assert [e.event for e in events] == ["start", "log", "output", "output", "output", "metric", "metric", "completed"]
    assert json.loads(events[3].data) == {"chunk": "Pr", "index": 1}


def test_sse_decoder_follows_the_spec_details():
    text = ": a comment\ndata:no space\ndata: second line\n\nevent: lonely\n\nevent: x\r\ndata: y\n\n"
    events = decode(text.replace("\r", ""))
    assert [(e.event, e.data) for e in events] == [("message", "no space\nsecond line"), ("x", "y")]  # no data: dropped


def test_tracker_times_the_first_chunk_with_text_and_takes_the_metrics():
    tracker = StreamTracker(started_at=10.0)
    done = [tracker.apply_cog_event(e, 10.0 + i) for i, e in enumerate(decode(COGLET_STREAM))]
    assert done == [False] * 7 + [True]
    assert tracker.prediction_id == "pred_18ea461a0dd721c7"
    assert tracker.first_token_at == 13.0  # the empty chunk at 12.0 is no token for the reader
    result = request_result(tracker, users=1, user=0, index=0, level_start=9.0)
    assert (result.status, result.latency_s, result.ttft_s, result.started_s) == (OK, 7.0, 3.0, 1.0)
    assert (result.output_tokens, result.tokens_from, result.input_tokens, result.chunks) == (8, "metric", 77, 3)
    assert result.server_tokens_per_second == 281.4


def test_without_a_token_metric_the_chunks_are_counted():
    tracker = StreamTracker(started_at=0.0)
    tracker.on_chunk("a", 0.1)
    tracker.on_chunk("b", 0.2)
    tracker.on_completed("succeeded", None, {}, 0.3)
    result = request_result(tracker, users=1, user=0, index=0, level_start=0.0)
    assert (result.output_tokens, result.tokens_from) == (2, "chunks")


def test_a_failed_prediction_keeps_its_coded_error():
    tracker = StreamTracker(started_at=0.0)
    error = "Prediction failed: InputError: E1001 EmptyPregunta: pregunta: is empty."
    event = ServerSentEvent(
        "completed", json.dumps({"status": "failed", "error": error, "metrics": {"predict_time": 0.001}})
    )
    assert tracker.apply_cog_event(event, 0.5)
    assert (tracker.status, tracker.error) == (FAILED, error)


# ---------------------------------------------------------------- levels and statistics


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)  # rank 2.85: 3 + 0.85 * (4 - 3)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None


def result(status: str = OK, latency: float = 1.0, ttft: float | None = 0.2, tokens: int = 10, **kw):
    fields = dict(users=2, user=0, index=0, started_s=0.0, chunks=tokens, tokens_from="metric", input_tokens=30)
    fields.update(server_tokens_per_second=50.0, busy_retries=0, error="")
    fields.update(kw)
    return RequestResult(status=status, latency_s=latency, ttft_s=ttft, output_tokens=tokens, **fields)


def test_level_stats_count_successes_errors_and_tokens():
    results = [
        result(latency=1.0, ttft=0.1, tokens=10),
        result(latency=3.0, ttft=0.3, tokens=30, tokens_from="chunks", input_tokens=None),
        result(status=AT_CAPACITY, latency=0.01, ttft=None, tokens=0),
        result(status=AT_CAPACITY, latency=0.01, ttft=None, tokens=0),
        result(status=TIMEOUT, latency=9.0, ttft=None, tokens=0),
    ]
    stats = level_stats(2, results, wall_s=4.0)
    assert (stats.requests, stats.ok, stats.errors) == (5, 2, {AT_CAPACITY: 2, TIMEOUT: 1})
    assert stats.requests_per_second == pytest.approx(0.5)
    assert (stats.latency_s.p50, stats.ttft_s.p50) == (pytest.approx(2.0), pytest.approx(0.2))  # errors left out
    assert (stats.output_tokens, stats.output_tokens_per_second) == (40, pytest.approx(10.0))
    assert (stats.input_tokens_per_request, stats.output_tokens_per_request) == (30.0, 20.0)
    assert stats.tokens_from_chunks == 1


def fake_send(latency: float = 0.0, fail_on: int | None = None):
    calls = []

    async def send(tracker: StreamTracker) -> None:
        calls.append(tracker)
        if len(calls) == fail_on:
            raise KeyError("a bug in the client")
        await asyncio.sleep(latency)  # the fake request's own duration
        tracker.on_chunk("hola", tracker.started_at + latency / 2)
        tracker.on_completed("succeeded", None, {"output_token_count": 4}, tracker.started_at + latency)

    return send, calls


def test_run_level_sends_exactly_the_requests_spread_over_the_users():
    send, calls = fake_send(latency=0.01)
    results, wall = asyncio.run(run_level(send, users=3, requests=7, duration_s=60))
    assert [r.index for r in results] == list(range(7))
    assert {r.user for r in results} == {0, 1, 2}
    assert all(r.status == OK and r.users == 3 for r in results)
    assert wall >= 0.02  # 7 requests over 3 users: at least 3 in a row


def test_run_level_stops_sending_at_its_duration():
    send, calls = fake_send(latency=0.05)
    results, _ = asyncio.run(run_level(send, users=1, requests=1000, duration_s=0.12))
    assert 1 <= len(results) <= 4


def test_a_client_error_is_recorded_and_the_level_goes_on():
    send, _ = fake_send(fail_on=2)
    results, _ = asyncio.run(run_level(send, users=1, requests=3, duration_s=60))
    assert [r.status for r in results] == [OK, CLIENT_ERROR, OK]
    assert "KeyError" in results[1].error


# ---------------------------------------------------------------- report


def level(users: int, rps: float, errors: dict | None = None, ok: int = 10):
    return LevelStats(
        users=users, requests=10, ok=ok, errors=errors or {}, wall_s=10.0, requests_per_second=rps,
        latency_s=Percentiles(1.0, 2.0, 2.5), ttft_s=Percentiles(0.1, 0.2, None),
        output_tokens=50 * ok, output_tokens_per_second=50 * rps, input_tokens_per_request=80,
        output_tokens_per_request=50, server_tokens_per_second_p50=60.0, tokens_from_chunks=0, busy_retries=0,
    )  # fmt: skip


def test_cost_report_prices_the_fastest_level_without_errors():
    levels = [level(1, 1.0), level(2, 1.8), level(4, 5.0, {AT_CAPACITY: 9}, ok=1)]
    report = cost_report(levels, gpu_price_per_hour=3.6, calls_per_user_per_day=10, api_output_price_per_million=2.0)
    assert (report.users, report.level_had_errors) == (2, False)
    assert report.gpu.per_1k_requests == pytest.approx(0.001 / 1.8 * 1000)
    assert report.api_input_price_per_million == 2.0  # one API price: blended, for every token
    assert report.api.per_request == pytest.approx((80 + 50) * 2.0 / 1e6)
    text = format_cost_report(report)
    assert "Cost at 2 users (the fastest level without errors)" in text
    assert "per 1,000 requests" in text and "$0.556" in text and "Break-even utilisation" in text


def test_no_successful_level_means_no_cost():
    assert cost_report([level(1, 0.0, {TIMEOUT: 10}, ok=0)], gpu_price_per_hour=1, calls_per_user_per_day=1) is None


def test_table_has_one_row_per_level_with_errors_by_kind():
    lines = format_table([level(1, 1.0), level(2, 1.5, {AT_CAPACITY: 3, TIMEOUT: 1})]).splitlines()
    assert lines[0].split()[:4] == ["users", "sent", "ok", "errors"]
    assert lines[1].split()[:4] == ["1", "10", "10", "0"]
    assert "at_capacity 3, timeout 1" in lines[2] and lines[2].rstrip().endswith("60")


@pytest.mark.parametrize(
    "value, text", [(0, "$0"), (1234.5, "$1,234"), (5.049, "$5.05"), (0.0504, "$0.0504"), (0.0000350, "$0.0000350")]
)
def test_money(value, text):
    assert money(value) == text


# ---------------------------------------------------------------- the HTTP client against a fake Cog server


@dataclass
class FakeCog:
    """Answers POST /predictions with one canned behaviour; records every request."""

    behaviour: str
    url: str = ""
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def serve_fake_cog(fake: FakeCog) -> Iterator[FakeCog]:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_json(200, {"status": "READY"})

        def do_POST(self) -> None:
            body = self.read_json() or {}
            fake.requests.append((self.command, self.path, body))
            if self.path.endswith("/cancel"):
                fake.release.set()
                self.send_json(200, {})
            elif fake.behaviour == "invalid":
                self.send_json(422, {"detail": [{"loc": ["body", "input", "top_k"]}]})
            elif fake.behaviour == "json":
                self.send_json(200, {"detail": "This model does not support streaming responses"})
            elif fake.behaviour == "truncated":
                self.send_body(200, COGLET_STREAM.split("event: completed")[0].encode(), "text/event-stream")
            elif fake.behaviour == "hang":
                start = b'event: start\ndata: {"id": "pred_slow", "status": "processing"}\n\n'
                self.send_body(200, start, "text/event-stream", length=len(start) + 1)
                self.wfile.flush()
                fake.release.wait(30)  # until the client cancels the prediction

    with local_server(Handler) as url:
        fake.url = url
        try:
            yield fake
        finally:
            fake.release.set()  # before shutdown(), which waits for a handler still holding a stream


async def send_once(url: str, timeout: float = 10) -> StreamTracker:
    async with httpx.AsyncClient(trust_env=False) as client:
        tracker = StreamTracker(started_at=0.0)
        await LocalSender(client, url, {"pregunta": "x"}, timeout=timeout, retry_busy=False)(tracker)
        return tracker


@pytest.mark.parametrize(
    "behaviour, kind, words",
    [
        ("invalid", INVALID_INPUT, "HTTP 422"),
        ("json", NOT_STREAMING, "scripts/serve"),
        ("truncated", STREAM_ENDED, "before the completed event"),
    ],
)
def test_local_sender_names_each_kind_of_failure(behaviour, kind, words):
    with serve_fake_cog(FakeCog(behaviour)) as fake:
        tracker = asyncio.run(send_once(fake.url))
    assert tracker.status == kind and words in tracker.error
    assert fake.requests[0][:2] == ("POST", "/predictions") and fake.requests[0][2] == {"input": {"pregunta": "x"}}


def test_local_sender_times_out_and_cancels_the_prediction():
    with serve_fake_cog(FakeCog("hang")) as fake:
        tracker = asyncio.run(send_once(fake.url, timeout=0.5))
        assert fake.release.wait(10)  # the cancel request arrived
    assert (tracker.status, tracker.prediction_id) == (TIMEOUT, "pred_slow")
    assert fake.requests[-1][:2] == ("POST", "/predictions/pred_slow/cancel")


def test_local_sender_reports_a_closed_port_as_a_connection_error():
    with serve_fake_cog(FakeCog("invalid")) as fake:
        url = fake.url
    tracker = asyncio.run(send_once(url))
    assert tracker.status == CONNECTION


# ---------------------------------------------------------------- main()


def test_main_refuses_a_remote_url_before_any_request(tmp_path, capsys):
    assert cli.main(["loadtest", "--url", "http://192.168.1.10:5000", "--out", str(tmp_path / "out")]) == 2
    assert "192.168.1.10 is not this machine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_main_says_how_to_start_a_server_that_is_not_there(tmp_path, capsys):
    with serve_fake_cog(FakeCog("invalid")) as fake:
        url = fake.url  # closed once the block ends
    assert cli.main(["loadtest", "--url", url, "--out", str(tmp_path / "out")]) == 2
    assert "Start the server first" in capsys.readouterr().err
