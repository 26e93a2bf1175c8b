"""Shared fixtures: no downloads, no leaking environment, tiny models once per session, engines closed after use."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Every variable llmserve.config reads; tests set what they need through monkeypatch.
CONFIG_VARS = (
    "MODEL_ID",
    "MODEL_REVISION",
    "DTYPE",
    "DEVICE",
    "WEIGHTS_DIR",
    "HF_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "ENGINE",
    "COMPILE",
    "COMPILE_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "MODERATION",
    "MODERATION_RULES",
    "MODERATION_MODEL",
    "MODERATION_MODEL_REVISION",
    "MODERATION_CLASSIFIER",
    "REPLICATE_API_TOKEN",
    "REPLICATE_BASE_URL",
    "DOCKER_CONFIG",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


def pytest_configure(config: pytest.Config) -> None:
    # No test may reach the Hugging Face hub; subprocesses inherit this too.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    # Nor read a developer's .env (tokens, MODEL_ID): the scripts' ENV_FILE points at nothing.
    os.environ["ENV_FILE"] = os.devnull
    # Module-scoped fixtures are made before the per-test environment below: they too get the classifier off.
    os.environ["MODERATION_CLASSIFIER"] = "off"


@pytest.fixture(autouse=True)
def _clean_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIG_VARS + ("COG_MAX_CONCURRENCY", "PORT"):
        # Set first so that monkeypatch remembers the original and undoes what the code under test sets too.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    # The trained classifier loads the embedded model's layers (seconds, 300 MB): only the tests of it turn it on
    # (tests/real/test_classifier.py); the rest test the rules and the pipeline around them.
    monkeypatch.setenv("MODERATION_CLASSIFIER", "off")


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama whose tokenizer has a chat template: the generic, non-Falcon path."""
    from llmserve.tools.tiny import make_tiny_chat_model

    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Falcon-RW model and tokenizer, as scripts/make_tiny_model writes it."""
    from llmserve.tools.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-falcon"))


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """Register what a test opens (an Engine, an Answerer): `closing(x)` returns x, and closes it after the test."""
    opened: list[Any] = []
    yield lambda thing: opened.append(thing) or thing
    for thing in reversed(opened):
        thing.close()


@pytest.fixture
def make_engine(closing):
    """Engine.load(path, **options), on the CPU in float32 unless told otherwise; closed after the test."""
    import torch

    from llmserve.engine.model import Engine

    def make(path: Path, **options):
        options.setdefault("device", torch.device("cpu"))
        options.setdefault("dtype", torch.float32)
        return closing(Engine.load(path, **options))

    return make


@pytest.fixture
def make_predictor(closing, monkeypatch):
    """predict.Predictor set up under these environment variables; its engine and moderator closed after the test."""
    from predict import Predictor

    def make(**env: str) -> Predictor:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        predictor = Predictor()
        predictor.setup()
        closing(predictor.answerer)
        if predictor.moderator is not None:
            closing(predictor.moderator)
        return predictor

    return make
