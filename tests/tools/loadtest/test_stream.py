"""One request: Cog's SSE events, what the tracker makes of them, and the sender against a fake Cog server."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_sse import ServerSentEvent

from llmserve.tools.cogserver import iter_events
from llmserve.tools.loadtest.stream import (
    CONNECTION,
    FAILED,
    INVALID_INPUT,
    NOT_STREAMING,
    OK,
    STREAM_ENDED,
    TIMEOUT,
    LocalSender,
    StreamTracker,
    request_result,
)
from tests.helpers.fakecog import COGLET_STREAM, FakeCog, serve_fake_cog


def decode(text: str) -> list[ServerSentEvent]:
    """The events of a streamed response with this body, as the load test's client reads them."""
    return list(iter_events(httpx.Response(200, headers={"content-type": "text/event-stream"}, text=text)))


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
