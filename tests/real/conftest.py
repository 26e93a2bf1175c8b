"""The real tier: the embedded SmolLM2-135M-Instruct model and the classifier's Gemma base, built by `make embedded`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmserve.config import Settings
from llmserve.serving.embedded import GEMMA, local_embedded_path
from predict import Predictor

# Where `make embedded` (run by `make test`) puts it: the default WEIGHTS_DIR, whatever the shell says.
EMBEDDED_DIR = local_embedded_path(Settings())
CLASSIFIER_BASE_DIR = local_embedded_path(Settings(), GEMMA)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    if EMBEDDED_DIR is None:
        # A failure, not a skip: CI must never pass without the real model having answered.
        pytest.fail(
            "the embedded model is not built: run `make embedded` (make test does), or leave this tier out "
            "with `pytest -m 'not real'`",
            pytrace=False,
        )
    return EMBEDDED_DIR


@pytest.fixture(scope="session")
def classifier_base_dir() -> Path:
    """The shipped moderation classifier's base model (its card says gemma-3-270m)."""
    if CLASSIFIER_BASE_DIR is None:
        pytest.fail(
            "the moderation classifier's base model is not built: run `make embedded` (make test does)", pytrace=False
        )
    return CLASSIFIER_BASE_DIR


@pytest.fixture(scope="session")
def real_predictor(embedded_dir, classifier_base_dir) -> Iterator[Predictor]:
    """predict.Predictor on the embedded model in float32 (bit-comparable with transformers), default guardrails."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODEL_ID", "embedded")
        mp.setenv("WEIGHTS_DIR", str(Settings().weights_dir))
        mp.setenv("DTYPE", "float32")
        mp.setenv("MODERATION_CLASSIFIER", "on")
        p = Predictor()
        p.setup()
    yield p
    p.answerer.close()
