"""A real Cog server (coglet, via scripts/serve) on the tiny model, once per session."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from llmserve.tiny import make_tiny_model
from tests.conftest import ROOT

SLOTS = 2


@dataclass
class Server:
    url: str
    process: subprocess.Popen

    def health(self) -> str:
        return requests.get(f"{self.url}/health-check", timeout=10).json()["status"]

    def wait_idle(self, timeout: float = 60) -> None:
        """Poll until the slot is free: coglet frees it a moment after a prediction's last event."""
        deadline = time.monotonic() + timeout
        while (status := self.health()) != "READY":
            if time.monotonic() > deadline:
                raise TimeoutError(f"server still {status} after {timeout}s")
            time.sleep(0.05)

    def predict(self, *, wait_idle: bool = True, **inputs) -> requests.Response:
        if wait_idle:
            self.wait_idle()
        return requests.post(f"{self.url}/predictions", json={"input": inputs}, timeout=300)

    def stream(self, inputs: dict, prediction_id: str | None = None) -> requests.Response:
        """Open an SSE prediction (PUT with an id, else POST); use it as a context manager."""
        self.wait_idle()
        method, path = ("PUT", f"/predictions/{prediction_id}") if prediction_id else ("POST", "/predictions")
        return requests.request(
            method,
            f"{self.url}{path}",
            json={"input": inputs},
            headers={"Accept": "text/event-stream"},
            stream=True,
            timeout=300,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(server: Server, timeout: float = 180) -> None:
    """Poll /health-check until READY; fail early if the server dies or setup fails."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}")
        try:
            status = server.health()
        except requests.ConnectionError:
            status = None
        if status == "READY":
            return
        if status in ("SETUP_FAILED", "DEFUNCT"):
            raise RuntimeError(f"server setup failed: {status}")
        time.sleep(0.2)
    raise TimeoutError(f"server not READY after {timeout}s (last status {status})")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    # A 2048-token context, like falcon-rw-1b, so that long generations can be started and cancelled.
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-2k"), context_length=2048)
    port = free_port()
    log = open(tmp_path_factory.mktemp("server-log") / "server.log", "w+")
    # Two slots: enough to show batching, capacity and cancel on 2 cores.
    env = {**os.environ, "MODEL_ID": str(model), "DTYPE": "float32", "COG_MAX_CONCURRENCY": str(SLOTS)}
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "serve"), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    srv = Server(url=f"http://127.0.0.1:{port}", process=process)
    try:
        wait_until_ready(srv)
        yield srv
    except Exception:
        log.seek(0)
        print(log.read())
        raise
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def sse_events(response: requests.Response) -> Iterator[tuple[str, dict]]:
    """Parse a text/event-stream response into (event, data) pairs as they arrive."""
    response.encoding = "utf-8"  # SSE is always UTF-8; requests would guess Latin-1 without a charset
    event, data = None, []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if event is not None:
                yield event, json.loads("\n".join(data)) if data else {}
            event, data = None, []
        elif line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
