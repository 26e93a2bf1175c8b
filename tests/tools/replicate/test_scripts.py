"""scripts/client.py, scripts/deploy and scripts/push as a person runs them, with nothing leaving 127.0.0.1.

client.py and deploy use the real replicate library against tests/helpers/fakereplicate.py (REPLICATE_BASE_URL);
push runs with PATH holding only small fakes of `cog` and `docker` that record how they were called.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.fakereplicate import TOKEN, FakeReplicate

CLIENT = [sys.executable, str(ROOT / "scripts" / "client.py")]
E1007 = (
    "E1007 MinAboveMax: min_new_tokens: min_new_tokens=200 is above max_new_tokens=100. "
    "Lower min_new_tokens or raise max_new_tokens so that min_new_tokens <= max_new_tokens."
)


def run(command: list[str], api: FakeReplicate | None, *, token: str | None = TOKEN, **env: str):
    full_env = {**os.environ, "REPLICATE_POLL_INTERVAL": "0.01", **env}
    if api is not None:
        full_env["REPLICATE_BASE_URL"] = api.url
    if token:
        full_env["REPLICATE_API_TOKEN"] = token
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=60)


# --- scripts/client.py ------------------------------------------------------------------------------


def test_client_without_a_token_names_the_variable_and_sends_nothing(api):
    result = run([*CLIENT, "alice/pregunta:v2", "hola"], api, token=None)
    assert result.returncode == 2
    assert "REPLICATE_API_TOKEN is not set" in result.stderr
    assert "https://replicate.com/account/api-tokens" in result.stderr
    assert api.requests == []


def test_client_refuses_a_malformed_target_before_any_request(api):
    result = run([*CLIENT, "alice", "hola"], api)
    assert result.returncode == 2 and "expected OWNER/MODEL" in result.stderr
    assert api.requests == []


def test_client_run_sends_the_typed_inputs_and_prints_the_joined_answer(api):
    api.output = ["Par", "ís", ".\n", "https://fr.wikipedia.org/wiki/Paris"]  # a chunk the library would make a file
    result = run(
        [*CLIENT, "alice/pregunta:v2", "¿Capital de Francia?", "--temperature", "0", "--max-new-tokens", "64",
         "--seed", "7", "--system_prompt", "Responde en español."],
        api,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "París.\nhttps://fr.wikipedia.org/wiki/Paris\n"
    create = api.requests[0]
    assert (create.method, create.path, create.headers.get("Prefer")) == ("POST", "/v1/predictions", "wait")
    assert create.body == {
        "version": "v2",
        "input": {
            "pregunta": "¿Capital de Francia?",
            "system_prompt": "Responde en español.",
            "max_new_tokens": 64,
            "temperature": 0.0,
            "seed": 7,
        },
    }


def test_client_run_polls_a_prediction_that_is_still_starting(api):
    api.status_on_create = "starting"
    result = run([*CLIENT, "alice/pregunta:v2", "hola"], api)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "París.\n"
    assert ("GET", "/v1/predictions/p1") in [(r.method, r.path) for r in api.requests]


def test_client_stream_prints_every_chunk_from_the_event_stream(api):
    api.output = ["Un", " transformer", "\n\n", "es ", "https://arxiv.org/abs/1706.03762"]
    result = run([*CLIENT, "alice/pregunta:v2", "¿Qué es un transformer?", "--stream", "--top-k", "5"], api)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Un transformer\n\nes https://arxiv.org/abs/1706.03762\n"
    create, stream = api.requests[:2]
    assert create.body["stream"] is True
    assert create.body["input"] == {"pregunta": "¿Qué es un transformer?", "top_k": 5}
    assert create.body["version"] == "v2"
    assert (stream.method, stream.path, stream.headers["Accept"]) == ("GET", "/stream/p1", "text/event-stream")


@pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])
def test_client_prints_the_models_coded_error_and_fails(api, stream):
    api.error = E1007
    command = [*CLIENT, "alice/pregunta:v2", "hola", "--min-new-tokens", "200", "--max-new-tokens", "100"]
    result = run(command + (["--stream"] if stream else []), api)
    assert result.returncode == 1
    assert E1007 in result.stderr


def test_client_prints_the_apis_input_validation_error(api):
    result = run([*CLIENT, "alice/pregunta:v2", "hola", "--temperature", "3.5"], api)
    assert result.returncode == 1
    assert "422" in result.stderr and "input.temperature" in result.stderr and "3.5" in result.stderr


def test_client_explains_a_refused_token(api):
    result = run([*CLIENT, "alice/pregunta:v2", "hola"], api, token="r8_wrong")
    assert result.returncode == 1 and "401" in result.stderr and "check REPLICATE_API_TOKEN" in result.stderr


def test_client_without_a_version_says_a_pushed_model_needs_one(api):
    result = run([*CLIENT, "alice/pregunta", "hola"], api)
    assert result.returncode == 1 and "OWNER/MODEL:VERSION" in result.stderr
    assert api.requests[0].path == "/v1/models/alice/pregunta/predictions"


@pytest.mark.parametrize("stream", [False, True], ids=["run", "stream"])
def test_client_asks_a_deployment(api, stream):
    api.add_deployment("alice", "prod", model="alice/pregunta", version="v1", hardware="gpu-t4", lo=0, hi=2)
    command = [*CLIENT, "--deployment", "alice/prod", "hola", "--top-p", "0.5"]
    result = run(command + (["--stream"] if stream else []), api)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "París.\n"
    create = api.requests[0]
    assert (create.method, create.path) == ("POST", "/v1/deployments/alice/prod/predictions")
    assert create.body["input"] == {"pregunta": "hola", "top_p": 0.5}
    assert api.predictions["p1"]["version"] == "v1"


# --- scripts/deploy ---------------------------------------------------------------------------------

DEPLOY = [str(ROOT / "scripts" / "deploy")]


def test_deploy_without_a_token_is_refused_before_any_request(api):
    result = run([*DEPLOY, "alice/prod", "--model", "alice/pregunta", "--hardware", "gpu-t4"], api, token=None)
    assert result.returncode == 2
    assert "E4004 MissingApiToken: REPLICATE_API_TOKEN" in result.stderr and api.requests == []


def test_deploy_dry_run_prints_the_request_and_sends_no_change(api):
    command = [*DEPLOY, "--owner", "alice", "--name", "prod", "--model", "r8.im/alice/pregunta", "--hardware",
               "gpu-l40s", "--min-instances", "1", "--max-instances", "3", "--dry-run"]  # fmt: skip
    result = run(command, api)
    assert result.returncode == 0, result.stderr
    assert "create deployment alice/prod: POST /v1/deployments" in result.stdout
    body = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    assert body == {
        "name": "prod",
        "model": "alice/pregunta",
        "version": "v2",
        "hardware": "gpu-l40s",
        "min_instances": 1,
        "max_instances": 3,
    }
    assert "dry run: nothing was sent" in result.stdout
    assert api.writes() == [] and api.deployments == {}


def test_deploy_creates_then_updates_and_says_how_to_call_it(api):
    created = run([*DEPLOY, "alice/prod", "--model", "alice/pregunta", "--hardware", "gpu-t4"], api)
    assert created.returncode == 0, created.stderr
    assert "created alice/prod: release 1, alice/pregunta:v2, gpu-t4, 0 to 1 instances" in created.stdout
    assert "https://replicate.com/deployments/alice/prod" in created.stdout
    assert 'replicate.deployments.get("alice/prod").predictions.create(' in created.stdout

    api.models["alice/pregunta"].append("v3")  # a new push
    updated = run([*DEPLOY, "alice/prod", "--max-instances", "5"], api)
    assert updated.returncode == 0, updated.stderr
    assert "updated alice/prod: release 2, alice/pregunta:v3, gpu-t4, 0 to 5 instances" in updated.stdout
    patch = api.writes()[-1]
    assert (patch.method, patch.path, patch.body) == (
        "PATCH",
        "/v1/deployments/alice/prod",
        {"version": "v3", "max_instances": 5},
    )


def test_deploy_reports_bad_arguments_with_their_code(api):
    result = run([*DEPLOY, "alice/prod", "--model", "alice/pregunta", "--hardware", "gpu-x"], api)
    assert result.returncode == 2 and "E4005 BadDeployment: hardware: 'gpu-x'" in result.stderr
    result = run([*DEPLOY, "alice/prod", "--min-instances", "-1"], api)
    assert result.returncode == 2 and "--min-instances" in result.stderr
    result = run([*DEPLOY, "Alice/Prod", "--model", "alice/pregunta"], api)
    assert result.returncode == 2 and "E4003 BadModelRef: deployment:" in result.stderr
    assert api.writes() == []


def test_deploy_explains_a_refused_token(api):
    result = run([*DEPLOY, "alice/prod", "--max-instances", "2"], api, token="r8_wrong")
    assert result.returncode == 2 and "E4004 MissingApiToken: REPLICATE_API_TOKEN: was refused" in result.stderr


# --- scripts/push -----------------------------------------------------------------------------------

PUSH = [str(ROOT / "scripts" / "push")]


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH with only what the wrapper itself needs; tests add fake cog and docker."""
    path = tmp_path / "bin"
    path.mkdir()
    for tool in ("bash", "dirname"):
        (path / tool).symlink_to(shutil.which(tool))
    return path


def fake_tool(bin_dir: Path, name: str, body: str = "") -> Path:
    """An executable that appends its working directory and arguments to <name>.calls, then runs `body`."""
    log = bin_dir.parent / f"{name}.calls"
    script = bin_dir / name
    script.write_text(f'#!/bin/bash\necho "$PWD|$*" >> {log}\n{body}\n')
    script.chmod(0o755)
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def logged_in(tmp_path: Path) -> dict[str, str]:
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {"r8.im": {"auth": "YWxpY2U6dG9rZW4="}}}))
    return {"DOCKER_CONFIG": str(docker), "HOME": str(tmp_path)}


def push(args: list[str], bin_dir: Path, env: dict[str, str]):
    return run([*PUSH, *args], None, token=None, PATH=str(bin_dir), **env)


def test_push_without_cog_says_how_to_install_it(bin_dir, logged_in):
    result = push(["alice/pregunta"], bin_dir, logged_in)
    assert result.returncode == 2
    assert "E4001 ToolMissing: cog:" in result.stderr
    assert "https://github.com/replicate/cog/releases/latest/download/cog_$(uname -s)_$(uname -m)" in result.stderr


def test_push_without_docker_says_so(bin_dir, logged_in):
    cog = fake_tool(bin_dir, "cog")
    result = push(["alice/pregunta"], bin_dir, logged_in)
    assert result.returncode == 2 and "E4001 ToolMissing: docker: Docker is not on PATH" in result.stderr
    assert calls(cog) == []


def test_push_with_the_docker_daemon_down_says_so(bin_dir, logged_in):
    fake_tool(bin_dir, "cog")
    fake_tool(bin_dir, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    result = push(["alice/pregunta"], bin_dir, logged_in)
    assert result.returncode == 2
    assert "the Docker daemon is not reachable" in result.stderr and "Cannot connect" in result.stderr


def test_push_without_a_login_says_to_run_cog_login(bin_dir, tmp_path):
    fake_tool(bin_dir, "cog")
    fake_tool(bin_dir, "docker", "echo 27.3.1")
    result = push(["alice/pregunta"], bin_dir, {"HOME": str(tmp_path)})  # no ~/.docker/config.json
    assert result.returncode == 2
    assert "E4002 NotLoggedIn: r8.im:" in result.stderr and "cog login" in result.stderr
    assert str(tmp_path / ".docker" / "config.json") in result.stderr


def test_push_refuses_a_bad_image_name(bin_dir, logged_in):
    result = push(["r8.im/Alice/pregunta:latest"], bin_dir, logged_in)
    assert result.returncode == 2 and "E4003 BadModelRef: image:" in result.stderr
    result = push(["--owner", "alice"], bin_dir, logged_in)
    assert result.returncode == 2 and "both --owner and --model" in result.stderr


def test_push_dry_run_checks_everything_and_runs_nothing(bin_dir, logged_in):
    cog = fake_tool(bin_dir, "cog")
    docker = fake_tool(bin_dir, "docker", "echo 27.3.1")
    result = push(["--owner", "alice", "--model", "pregunta", "--dry-run"], bin_dir, logged_in)
    assert result.returncode == 0, result.stderr
    assert f"in {ROOT}: cog push r8.im/alice/pregunta" in result.stdout and "dry run" in result.stdout
    assert calls(cog) == []
    assert calls(docker) == [f"{Path.cwd()}|info --format {{{{.ServerVersion}}}}"]


def test_push_runs_cog_push_from_the_project_root(bin_dir, logged_in):
    cog = fake_tool(bin_dir, "cog")
    fake_tool(bin_dir, "docker", "echo 27.3.1")
    result = push(["r8.im/alice/pregunta", "--", "--separate-weights"], bin_dir, logged_in)
    assert result.returncode == 0, result.stderr
    assert calls(cog) == [f"{ROOT}|push r8.im/alice/pregunta --separate-weights"]
