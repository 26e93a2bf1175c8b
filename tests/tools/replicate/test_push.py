"""What scripts/push checks before `cog push`: the r8.im login, read as cog reads it, and the baked weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmserve.config import DockerSettings
from llmserve.tools.replicate.push import registry_login, weights_warning


def write_docker_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_login_is_found_in_config_json_auths(tmp_path):
    config = write_docker_config(tmp_path, {"auths": {"r8.im": {"auth": "YWxpY2U6dG9rZW4="}}})
    assert registry_login(config) == str(config / "config.json")


@pytest.mark.parametrize(
    "config", [{}, {"auths": {"r8.im": {}}}, {"auths": {"docker.io": {"auth": "eA=="}}}], ids=["empty", "bare", "other"]
)
def test_no_login_without_r8_credentials(tmp_path, config):
    assert registry_login(write_docker_config(tmp_path, config)) is None


def test_no_login_without_a_docker_config(tmp_path):
    assert registry_login(tmp_path / "missing") is None


def test_login_is_found_in_the_credential_store(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    # Answers for r8.im only, as docker-credential-* helpers do: the host arrives on stdin.
    helper.write_text(
        '#!/bin/bash\nread -r host\n[ "$1" = get ] && [ "$host" = r8.im ] || { echo "not found"; exit 1; }\n'
        'echo \'{"ServerURL": "r8.im", "Username": "alice", "Secret": "tok"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    config = write_docker_config(tmp_path / "docker", {"credsStore": "fake", "auths": {"r8.im": {}}})
    assert "docker-credential-fake" in registry_login(config)
    assert registry_login(config, host="ghcr.io") is None


def test_docker_settings_follow_docker_config_then_home():
    assert DockerSettings.from_env({"DOCKER_CONFIG": "/cfg", "HOME": "/home/x"}).config_dir == Path("/cfg")
    assert DockerSettings.from_env({"HOME": "/home/x"}).config_dir == Path("/home/x/.docker")


def test_weights_warning_only_when_weights_are_missing(tmp_path):
    assert "make weights" in weights_warning(tmp_path / "weights")
    (tmp_path / "weights" / "models--x" / "snapshots").mkdir(parents=True)
    assert "is empty" in weights_warning(tmp_path / "weights")
    (tmp_path / "weights" / "models--x" / "snapshots" / "model.safetensors").write_bytes(b"x")
    assert weights_warning(tmp_path / "weights") is None
