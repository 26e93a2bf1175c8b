"""Settings come from the environment, declared once, with a pinned default revision."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmserve.config import (
    DEFAULT_MODEL_ID,
    DEFAULT_MODEL_REVISION,
    DEFAULT_MODERATION_RULES,
    PROJECT_ROOT,
    ServerSettings,
    Settings,
    keep_compiled_code_in,
)
from llmserve.errors import ErrorCode, SetupError


def test_defaults_pin_the_default_model():
    settings = Settings.from_env({})
    assert settings.model_id == DEFAULT_MODEL_ID == "tiiuae/falcon-rw-1b"
    assert settings.model_revision == DEFAULT_MODEL_REVISION
    assert len(DEFAULT_MODEL_REVISION) == 40 and int(DEFAULT_MODEL_REVISION, 16) >= 0  # a commit, not "main"
    assert settings.weights_dir == PROJECT_ROOT / "weights"
    assert (settings.dtype, settings.device, settings.hf_token) == ("auto", "auto", None)


def test_another_model_defaults_to_its_main_branch():
    assert Settings.from_env({"MODEL_ID": "org/other"}).model_revision == "main"


def test_everything_can_be_set(tmp_path: Path):
    env = {
        "MODEL_ID": "org/model",
        "MODEL_REVISION": "abc123",
        "DTYPE": "Float32",
        "DEVICE": "cpu",
        "WEIGHTS_DIR": str(tmp_path),
        "HF_TOKEN": "hf_x",
    }
    settings = Settings.from_env(env)
    assert (settings.model_id, settings.model_revision, settings.dtype, settings.device) == (
        "org/model",
        "abc123",
        "float32",
        "cpu",
    )
    assert settings.weights_dir == tmp_path and settings.hf_token == "hf_x"


@pytest.mark.parametrize("name, value", [("DTYPE", "float8"), ("DEVICE", "tpu")])
def test_bad_values_fail_with_the_variable_named(name, value):
    with pytest.raises(SetupError) as info:
        Settings.from_env({name: value})
    assert info.value.code is ErrorCode.BadConfig and info.value.field == name and value in str(info.value)


def test_local_directory_is_detected(tmp_path: Path):
    assert Settings.from_env({"MODEL_ID": str(tmp_path)}).is_local
    assert not Settings.from_env({}).is_local


def test_server_settings():
    assert ServerSettings.from_env({}) == ServerSettings(port=5000, max_concurrency=2)
    assert ServerSettings.from_env({"PORT": "5077"}).port == 5077
    assert ServerSettings.from_env({"COG_MAX_CONCURRENCY": "8"}).max_concurrency == 8
    with pytest.raises(SetupError):
        ServerSettings.from_env({"PORT": "http"})


def test_concurrency_engine_and_compile():
    settings = Settings.from_env({})
    assert (settings.max_concurrency, settings.engine, settings.compile) == (1, "auto", "auto")
    assert settings.compile_cache == settings.weights_dir / "torch-compile"
    settings = Settings.from_env({"COG_MAX_CONCURRENCY": "8", "ENGINE": "Transformers", "COMPILE": "off"})
    assert (settings.max_concurrency, settings.engine, settings.compile) == (8, "transformers", "off")
    assert Settings.from_env({"COMPILE": "CUDAGraphs"}).compile == "cudagraphs"
    assert Settings.from_env({"WEIGHTS_DIR": "/w"}).compile_cache == Path("/w/torch-compile")
    assert Settings.from_env({"COMPILE_CACHE_DIR": "/c", "TORCHINDUCTOR_CACHE_DIR": "/t"}).compile_cache == Path("/c")
    assert Settings.from_env({"TORCHINDUCTOR_CACHE_DIR": "/t"}).compile_cache == Path("/t")
    for env, field in (
        ({"COG_MAX_CONCURRENCY": "0"}, "COG_MAX_CONCURRENCY"),
        ({"COG_MAX_CONCURRENCY": "many"}, "COG_MAX_CONCURRENCY"),
        ({"ENGINE": "vllm"}, "ENGINE"),
        ({"COMPILE": "yes"}, "COMPILE"),
    ):
        with pytest.raises(SetupError) as info:
            Settings.from_env(env)
        assert info.value.field == field and info.value.code == "E2001"


def test_only_config_reads_the_environment():
    offenders = [
        p.name
        for p in (PROJECT_ROOT / "llmserve").glob("*.py")
        # cli.py and benchmark.py only set the environment of the Cog server or Predictor they start.
        if p.name not in ("config.py", "cli.py", "benchmark.py") and "os.environ" in p.read_text()
    ]
    assert offenders == []


def test_compiled_code_goes_to_compile_cache_dir_or_a_temporary_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    assert keep_compiled_code_in(tmp_path / "cache") == tmp_path / "cache"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    used = keep_compiled_code_in(blocker / "cache")  # cannot be created under a file
    assert used != blocker / "cache" and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(used)
    assert f"COMPILE_CACHE_DIR {blocker / 'cache'} cannot be written" in caplog.text


# Moderation settings ----------------------------------------------------------------------------


def test_moderation_settings_default_to_both_with_the_shipped_rules():
    settings = Settings.from_env({})
    assert (settings.moderation, settings.moderation_rules, settings.moderation_model) == (
        "both",
        DEFAULT_MODERATION_RULES,
        "",
    )
    assert DEFAULT_MODERATION_RULES.is_file() and settings.moderation_model_revision == "main"


def test_moderation_settings_can_be_set(tmp_path: Path):
    env = {
        "MODERATION": "Input",
        "MODERATION_RULES": str(tmp_path / "r.yaml"),
        "MODERATION_MODEL": "meta-llama/Llama-Guard-3-1B",
        "MODERATION_MODEL_REVISION": "abc123",
    }
    settings = Settings.from_env(env)
    assert (settings.moderation, settings.moderation_rules) == ("input", tmp_path / "r.yaml")
    assert (settings.moderation_model, settings.moderation_model_revision) == ("meta-llama/Llama-Guard-3-1B", "abc123")


def test_a_bad_moderation_mode_fails_setup():
    with pytest.raises(SetupError) as info:
        Settings.from_env({"MODERATION": "sometimes"})
    assert info.value.code is ErrorCode.BadConfig and info.value.field == "MODERATION"
    assert "'sometimes' is not one of off, input, output, both" in str(info.value)
