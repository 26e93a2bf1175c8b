"""One way to run a fake HTTP service on 127.0.0.1 for a test: a handler class in, its base URL out."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmserve.tools.cogserver import free_port


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler without access logs, with the request and response plumbing every fake needs."""

    def log_message(self, *args) -> None:
        """Keep the test output free of access logs."""

    def read_json(self) -> Any:
        """The request's JSON body, or None when it has none."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def send_body(
        self,
        status: int,
        body: bytes,
        content_type: str | None = "application/json",
        *,
        headers: Mapping[str, str] | None = None,
        length: int | None = None,
        with_body: bool = True,
    ) -> None:
        """Answer with `body`; `length` overrides the Content-Length (a stream cut short), and HEAD sends none."""
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any) -> None:
        self.send_body(status, json.dumps(payload).encode())


@contextmanager
def local_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free port of 127.0.0.1 until the block ends; yields "http://127.0.0.1:PORT"."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for it, once per test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"
