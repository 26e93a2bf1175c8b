"""scripts/openai_server as the tests run it: a real uvicorn process on a free port, until the block ends."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO

import httpx

from llmserve.config import PROJECT_ROOT
from llmserve.tools.cogserver import free_port


@contextmanager
def openai_server(env: Mapping[str, str], *, slots: int, timeout: float, log: IO[str]) -> Iterator[str]:
    """Start it under `env`, wait until GET /health answers 200, yield its /v1 base URL; stop it afterwards."""
    port = free_port()
    command = [str(PROJECT_ROOT / "scripts" / "openai_server"), "--port", str(port), "--slots", str(slots)]
    process = subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"scripts/openai_server exited with {process.returncode} before it was ready")
            try:
                if httpx.get(f"{url}/health", timeout=5, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"scripts/openai_server was not ready within {timeout:.0f} s")
            time.sleep(0.2)  # polling the server's own readiness
        yield f"{url}/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
