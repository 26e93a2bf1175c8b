"""Cancel through the real Cog server stops the generation, frees the one slot at once, and the next request runs.

coglet 0.23.1 on its own cancels an already-completed future: without llmserve/serving/cogcancel.py the answer
went on to its last token and new requests got 409 meanwhile. This test fails the day that mechanism stops working.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import httpx
import pytest

from llmserve.tools.cogserver import serving
from llmserve.tools.tiny import make_tiny_model
from tests.helpers.server import Server, sse_events

LONG = {"pregunta": "Cuéntame una historia larga", "max_new_tokens": 1900, "min_new_tokens": 1900}
QUICK = {"pregunta": "Hola", "temperature": 0, "max_new_tokens": 4}


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory) -> Iterator[tuple[Server, object]]:
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-2k"), context_length=2048)
    env = {**os.environ, "MODEL_ID": str(model), "DTYPE": "float32", "COG_MAX_CONCURRENCY": "1"}
    with open(tmp_path_factory.mktemp("server-log") / "server.log", "w+") as log:
        with serving(env, timeout=180, log=log) as url:
            yield Server(url), log


def _cancel(server: Server, prediction_id: str) -> None:
    reply = httpx.post(f"{server.url}/predictions/{prediction_id}/cancel", timeout=10, trust_env=False)
    assert reply.status_code == 200


def _log_has(log, text: str, after: int, timeout: float = 10) -> bool:
    """Whether the server's log gets `text` past offset `after` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log.seek(after)
        if text in log.read():
            return True
        time.sleep(0.05)  # polling the server's log file for a line it writes
    return False


@pytest.mark.parametrize("how", ["cancel", "dropped client"])
def test_a_cancelled_stream_stops_at_once_and_the_one_slot_serves_the_next_request(one_slot, how):
    server, log = one_slot
    prediction_id = f"long-{how.replace(' ', '-')}"
    log.seek(0, os.SEEK_END)
    after = log.tell()
    with server.stream(LONG, prediction_id) as response:
        events = sse_events(response)
        next(name for name, _ in events if name == "output")
        start = time.monotonic()
        if how == "cancel":
            _cancel(server, prediction_id)
            rest = list(events)
            outputs = sum(1 for name, _ in rest if name == "output")
            completed = [data for name, data in rest if name == "completed"]
            assert completed and completed[-1]["status"] == "canceled"
            assert outputs < 200, f"{outputs} more chunks after cancel: generation went on"
    # Dropping the connection (leaving the block) cancels too.
    assert _log_has(log, "finished: stop=canceled", after), "the engine never stopped the cancelled answer"
    answer = server.predict(wait_idle=False, retry_busy=True, **QUICK)
    assert time.monotonic() - start < 10  # not the minutes the 1,900 tokens would take
    assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text
