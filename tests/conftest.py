"""Shared fixtures: no downloads, no leaking environment, one tiny model per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every variable llmserve.config reads; tests set what they need through monkeypatch.
CONFIG_VARS = ("MODEL_ID", "MODEL_REVISION", "DTYPE", "DEVICE", "WEIGHTS_DIR", "HF_TOKEN")


def pytest_configure(config: pytest.Config) -> None:
    # No test may reach the Hugging Face hub; subprocesses inherit this too.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


@pytest.fixture(autouse=True)
def _clean_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIG_VARS + ("COG_MAX_CONCURRENCY", "PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Falcon-RW model and tokenizer, as scripts/make_tiny_model writes it."""
    from llmserve.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-falcon"))
