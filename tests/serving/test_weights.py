"""Weights: found in the cache without the network; a clear, immediate failure when they are absent."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from llmserve.config import Settings
from llmserve.errors import ErrorCode, SetupError
from llmserve.serving.weights import local_model_path, resolve_model_path
from tests.helpers import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, tiny_model_dir):
    """The tiny model laid out as huggingface_hub caches `org/tiny` at COMMIT (main points there)."""
    repo = tmp_path / "models--org--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return tmp_path


@pytest.mark.parametrize("revision", [COMMIT, "main"])
def test_cached_weights_are_found_offline(hub_cache, revision):
    settings = Settings.from_env({"MODEL_ID": "org/tiny", "MODEL_REVISION": revision, "WEIGHTS_DIR": str(hub_cache)})
    path = resolve_model_path(settings, allow_download=False)
    assert path.name == COMMIT and (path / "config.json").is_file()


def test_a_cached_revision_other_than_the_pinned_one_is_not_used(hub_cache):
    settings = Settings.from_env({"MODEL_ID": "org/tiny", "MODEL_REVISION": "f" * 40, "WEIGHTS_DIR": str(hub_cache)})
    assert local_model_path(settings) is None


def test_a_local_directory_is_used_as_is(tiny_model_dir):
    assert local_model_path(Settings.from_env({"MODEL_ID": str(tiny_model_dir)})) == tiny_model_dir.resolve()


def test_missing_weights_offline_fail_with_what_was_tried_and_the_fix(tmp_path):
    settings = Settings.from_env({"WEIGHTS_DIR": str(tmp_path)})
    start = time.perf_counter()
    with pytest.raises(SetupError) as info:
        resolve_model_path(settings)  # HF_HUB_OFFLINE=1 in tests: the hub refuses at once
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert info.value.code is ErrorCode.WeightsNotFound
    assert "tiiuae/falcon-rw-1b" in message and str(tmp_path) in message and settings.model_revision in message
    assert "MODEL_ID" in message and "local directory" in message


def test_offline_predict_script_asked_for_a_hub_model_fails_fast_with_an_actionable_message(tmp_path):
    start = time.perf_counter()
    result = subprocess.run(
        [str(ROOT / "scripts" / "predict"), "¿Hola?"],
        # Asked for by name, the default model is not swapped for the embedded one.
        env={**_env(), "WEIGHTS_DIR": str(tmp_path), "MODEL_ID": "tiiuae/falcon-rw-1b"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert time.perf_counter() - start < 60
    assert "E2002 WeightsNotFound" in result.stderr and "MODEL_ID" in result.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("MODEL_ID", "WEIGHTS_DIR", "DTYPE")}


def test_a_model_that_cannot_generate_fails_at_boot(tiny_model_dir, monkeypatch):
    from llmserve.engine.model import Engine
    from llmserve.serving.loader import load_answerer

    def broken(self, prompt_ids, params):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
        yield  # a generator, like the real one

    monkeypatch.setattr(Engine, "generate", broken)
    with pytest.raises(SetupError) as info:
        load_answerer(Settings.from_env({"MODEL_ID": str(tiny_model_dir)}))
    assert info.value.code is ErrorCode.WarmupFailed
    assert "warm-up" in str(info.value) and "illegal memory access" in str(info.value)
