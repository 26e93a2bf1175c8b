"""A fake Cog server for the load test's client: one canned behaviour per server, every request recorded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.helpers.localserver import QuietHandler, local_server

# What coglet 0.23.1 sent for one streamed prediction of the tiny model (logs shortened).
COGLET_STREAM = """\
event: start
data: {"id":"pred_18ea461a0dd721c7","status":"processing"}

event: log
data: {"data":"INFO llmserve.request.answer: generating\\n","source":"stderr"}

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


@dataclass
class FakeCog:
    """Answers POST /predictions with one canned behaviour; records every request."""

    behaviour: str
    url: str = ""
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    # What GET /health-check answers, one status per call; the last one stays.
    health: list[str] = field(default_factory=lambda: ["READY"])


@contextmanager
def serve_fake_cog(fake: FakeCog) -> Iterator[FakeCog]:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status = fake.health.pop(0) if len(fake.health) > 1 else fake.health[0]
            self.send_json(200, {"status": status})

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
            elif fake.behaviour == "ok":
                self.send_body(200, COGLET_STREAM.encode(), "text/event-stream")
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
