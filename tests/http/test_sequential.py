"""scripts/serve with its default slots: a client that sends each request as soon as the last one completed."""

from __future__ import annotations

import os

import httpx
import pytest

from llmserve.tools.cogserver import serving


@pytest.fixture(scope="module")
def default_server(tiny_model_dir):
    env = {k: v for k, v in os.environ.items() if k != "COG_MAX_CONCURRENCY"}
    with serving({**env, "MODEL_ID": str(tiny_model_dir), "DTYPE": "float32"}, timeout=180) as url:
        yield url


def test_a_sequential_client_never_gets_409_from_the_default_local_server(default_server):
    # coglet frees a slot a moment after a prediction's last event: with one slot, the next request can find it taken.
    statuses = []
    with httpx.Client(trust_env=False, timeout=120) as client:
        for i in range(20):
            reply = client.post(
                f"{default_server}/predictions",
                json={"input": {"pregunta": f"Hola {i}", "temperature": 0, "max_new_tokens": 2}},
            )
            statuses.append(reply.status_code)
    assert statuses == [200] * 20, statuses
