"""scripts/download_weights with the real huggingface_hub against a local fake hub (HF_ENDPOINT)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.fakehub import FakeHub, serve_fake_hub

COMMIT = "c0ffee" + "0" * 34


def run_script(name: str, *args: str, hub: FakeHub, weights: Path, offline: bool = False, **env: str):
    full_env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "MODEL_ID": hub.repo,
        "WEIGHTS_DIR": str(weights),
        **env,
    }
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args], env=full_env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def repo_files(tiny_model_dir) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in tiny_model_dir.iterdir()}
    # What a real repo also holds, and the download must skip: legacy weights and remote code.
    files["pytorch_model.bin"] = b"legacy weights"
    files["modeling_custom.py"] = b"print('remote code')"
    files["consolidated.safetensors"] = b"another copy of the weights"
    files["README.md"] = b"# model card"
    return files


def test_downloads_only_what_is_needed_preferring_safetensors(repo_files, tmp_path):
    with serve_fake_hub(FakeHub("org/tiny", repo_files, COMMIT)) as hub:
        result = run_script("download_weights", hub=hub, weights=tmp_path, MODEL_REVISION=COMMIT)
    assert result.returncode == 0, result.stderr
    snapshot = Path(result.stdout.strip().splitlines()[-1])
    assert snapshot == tmp_path / "models--org--tiny" / "snapshots" / COMMIT
    assert {p.name for p in snapshot.iterdir()} == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert "Fetching" in result.stderr  # huggingface_hub's progress bar


def test_second_run_does_no_network_work_and_the_model_then_answers_offline(repo_files, tmp_path):
    with serve_fake_hub(FakeHub("org/tiny", repo_files, COMMIT)) as hub:
        first = run_script("download_weights", hub=hub, weights=tmp_path)  # MODEL_REVISION=main for org/tiny
        assert first.returncode == 0, first.stderr
        before = len(hub.requests)
        second = run_script("download_weights", hub=hub, weights=tmp_path)
        assert second.returncode == 0, second.stderr
        assert len(hub.requests) == before, hub.requests[before:]
        assert second.stdout == first.stdout
    answered = run_script(
        "predict", "¿Hola?", "-i", "max_new_tokens=4", hub=hub, weights=tmp_path, offline=True, DTYPE="float32"
    )
    assert answered.returncode == 0, answered.stderr
    assert "model=org/tiny@main" in answered.stderr


def test_falls_back_to_pytorch_bin_when_the_repo_has_no_safetensors(repo_files, tmp_path):
    del repo_files["model.safetensors"]
    with serve_fake_hub(FakeHub("org/tiny", repo_files, COMMIT)) as hub:
        result = run_script("download_weights", hub=hub, weights=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in Path(result.stdout.strip().splitlines()[-1]).iterdir()}
    assert "pytorch_model.bin" in names and "modeling_custom.py" not in names


def test_an_unknown_repo_fails_with_the_hubs_answer(repo_files, tmp_path):
    with serve_fake_hub(FakeHub("org/tiny", repo_files, COMMIT)) as hub:
        result = run_script("download_weights", hub=hub, weights=tmp_path, MODEL_ID="org/missing")
    assert result.returncode == 2
    assert "E2002 WeightsNotFound" in result.stderr and "org/missing" in result.stderr
