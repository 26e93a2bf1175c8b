"""A real Cog server (coglet, via scripts/serve) on the tiny model, once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from llmserve.tools.cogserver import serving
from llmserve.tools.tiny import make_tiny_model
from tests.helpers.server import SLOTS, Server


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    # A 2048-token context, like falcon-rw-1b, so that long generations can be started and cancelled.
    model = make_tiny_model(tmp_path_factory.mktemp("tiny-2k"), context_length=2048)
    env = {**os.environ, "MODEL_ID": str(model), "DTYPE": "float32", "COG_MAX_CONCURRENCY": str(SLOTS)}
    with open(tmp_path_factory.mktemp("server-log") / "server.log", "w+") as log:
        try:
            with serving(env, timeout=180, log=log) as url:
                yield Server(url)
        except Exception:
            log.seek(0)
            print(log.read())
            raise
