"""llmserve.replicate_ops and scripts/client.py's inputs, in process: names, logins, and the deployment requests.

The replicate library is real; the Replicate API is tests/fakereplicate.py on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from llmserve.config import DockerSettings, ReplicateSettings
from llmserve.tools.replicate.api import make_client, parse_model_ref
from llmserve.tools.replicate.deploy import DeploymentRequest, apply_plan, plan_deployment
from llmserve.tools.replicate.errors import PublishCode, PublishError
from llmserve.tools.replicate.push import registry_login, weights_warning
from tests.helpers import ROOT
from tests.helpers.fakereplicate import TOKEN


@pytest.fixture
def client(api):
    return make_client(ReplicateSettings(api_token=TOKEN, base_url=api.url))


def load_client_script():
    spec = importlib.util.spec_from_file_location("replicate_client_script", ROOT / "scripts" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- scripts/client.py declares every input of predict.py -----------------------------------------


def test_client_script_has_a_flag_for_every_input_of_the_predictor():
    from llmserve.tools.inputs import declared_inputs

    inputs = declared_inputs()
    declared = load_client_script().INPUTS
    assert set(declared) | {"pregunta"} == set(inputs)  # pregunta is the positional argument
    python_type = {"string": str, "integer": int, "number": float}
    for name, (kind, _help) in declared.items():
        assert kind is python_type[inputs[name]["type"]], name


def test_client_script_help_states_the_predictors_ranges_and_defaults():
    from llmserve.tools.inputs import declared_inputs

    def number(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)

    declared = load_client_script().INPUTS
    for name, field in declared_inputs().items():
        if "minimum" not in field or name not in declared:
            continue
        default = "random" if field["default"] is None else number(field["default"])
        assert f"({number(field['minimum'])}-{number(field['maximum'])}; default {default})" in declared[name][1], name


def test_client_script_sends_only_the_inputs_given():
    script = load_client_script()
    args = script.build_parser().parse_args(
        ["alice/pregunta:v2", "¿Qué es?", "--temperature", "0", "--max_new_tokens", "64", "--stop-sequences", r"\n"]
    )
    assert script.model_input(args) == {
        "pregunta": "¿Qué es?",
        "temperature": 0.0,
        "max_new_tokens": 64,
        "stop_sequences": r"\n",
    }


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["r8.im/alice/pregunta", "alice/pregunta"])
def test_parse_model_ref_accepts_the_image_and_the_short_form(ref):
    assert parse_model_ref(ref) == ("alice", "pregunta")


@pytest.mark.parametrize("ref", ["alice", "Alice/Pregunta", "r8.im/alice/pregunta:latest", "docker.io/a/b/c", "a//b"])
def test_parse_model_ref_refuses_what_cog_push_cannot_use(ref):
    with pytest.raises(PublishError) as err:
        parse_model_ref(ref, field_name="image")
    assert err.value.code is PublishCode.BadModelRef and str(err.value).startswith("E4003 BadModelRef: image:")
    assert "r8.im/alice/pregunta" in err.value.fix


# --- r8.im login, read as cog reads it ------------------------------------------------------------


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


# --- deployments ----------------------------------------------------------------------------------


def test_no_token_is_refused_before_any_request(api):
    with pytest.raises(PublishError) as err:
        make_client(ReplicateSettings(api_token=None, base_url=api.url))
    assert str(err.value).startswith("E4004 MissingApiToken: REPLICATE_API_TOKEN:")
    assert "https://replicate.com/account/api-tokens" in str(err.value)
    assert api.requests == []


def test_a_new_deployment_is_created_with_the_latest_version_and_defaults(api, client):
    request = DeploymentRequest("alice", "pregunta-prod", model="alice/pregunta", hardware="gpu-l40s")
    plan = plan_deployment(client, request)
    assert plan.action == "create" and plan.request_line == "POST /v1/deployments"
    assert api.writes() == []  # planning only reads
    deployment = apply_plan(client, plan)
    (sent,) = api.writes()
    assert (sent.method, sent.path) == ("POST", "/v1/deployments")
    assert sent.body == {
        "name": "pregunta-prod",
        "model": "alice/pregunta",
        "version": "v2",
        "hardware": "gpu-l40s",
        "min_instances": 0,
        "max_instances": 1,
    }
    assert deployment.id == "alice/pregunta-prod" and deployment.current_release.number == 1


def test_an_existing_deployment_is_updated_with_only_what_changes(api, client):
    api.add_deployment("alice", "prod", model="alice/pregunta", version="v1", hardware="gpu-t4", lo=0, hi=2)
    plan = plan_deployment(client, DeploymentRequest("alice", "prod", min_instances=1, max_instances=4))
    assert plan.action == "update" and plan.request_line == "PATCH /v1/deployments/alice/prod"
    apply_plan(client, plan)
    (sent,) = api.writes()
    assert (sent.method, sent.path) == ("PATCH", "/v1/deployments/alice/prod")
    assert sent.body == {"version": "v2", "min_instances": 1, "max_instances": 4}  # hardware is unchanged
    assert api.deployments["alice/prod"]["current_release"]["number"] == 2


def test_an_update_that_changes_nothing_sends_nothing(api, client):
    api.add_deployment("alice", "prod", model="alice/pregunta", version="v2", hardware="gpu-t4", lo=0, hi=2)
    plan = plan_deployment(client, DeploymentRequest("alice", "prod", hardware="gpu-t4"))
    assert plan.action == "none" and plan.body == {}
    assert apply_plan(client, plan) is None and api.writes() == []


def test_an_explicit_version_must_exist(api, client):
    request = DeploymentRequest("alice", "prod", model="alice/pregunta", version="v9", hardware="gpu-t4")
    with pytest.raises(PublishError) as err:
        plan_deployment(client, request)
    assert str(err.value).startswith("E4005 BadDeployment: version:") and "'v9'" in str(err.value)
    request = DeploymentRequest("alice", "prod", model="alice/pregunta", version="v1", hardware="gpu-t4")
    assert plan_deployment(client, request).body["version"] == "v1"


def test_unknown_hardware_is_refused_with_the_list(api, client):
    request = DeploymentRequest("alice", "prod", model="alice/pregunta", hardware="gpu-a100")
    with pytest.raises(PublishError) as err:
        plan_deployment(client, request)
    assert err.value.field == "hardware" and "gpu-a100-large" in err.value.fix and "gpu-h100" in err.value.fix
    assert api.writes() == []


def test_hardware_is_sent_unchecked_when_the_list_cannot_be_read(api, client):
    request = DeploymentRequest("alice", "prod", model="alice/pregunta", hardware="gpu-new")
    api.route = _failing_hardware(api.route)
    plan = plan_deployment(client, request)
    assert plan.body["hardware"] == "gpu-new" and any("unchecked" in note for note in plan.notes)


def _failing_hardware(route):
    def wrapped(method, path, body):
        if path == "/v1/hardware":
            return 500, {"status": 500, "title": "Internal server error", "detail": "try later"}
        return route(method, path, body)

    return wrapped


@pytest.mark.parametrize(
    ("lo", "hi", "field"), [(3, 2, "min_instances"), (0, 0, "max_instances")], ids=["min-above-max", "max-zero"]
)
def test_instance_counts_are_checked_before_any_request(api, client, lo, hi, field):
    request = DeploymentRequest(
        "alice", "prod", model="alice/pregunta", hardware="gpu-t4", min_instances=lo, max_instances=hi
    )
    with pytest.raises(PublishError) as err:
        plan_deployment(client, request)
    assert err.value.code is PublishCode.BadDeployment and err.value.field == field
    assert api.requests == []


def test_min_instances_above_the_current_max_is_refused(api, client):
    api.add_deployment("alice", "prod", model="alice/pregunta", version="v2", hardware="gpu-t4", lo=0, hi=2)
    with pytest.raises(PublishError) as err:
        plan_deployment(client, DeploymentRequest("alice", "prod", min_instances=3))
    assert "min_instances=3 is above max_instances=2" in str(err.value)


def test_a_deployments_model_cannot_change(api, client):
    api.models["alice/other"] = ["w1"]
    api.add_deployment("alice", "prod", model="alice/pregunta", version="v2", hardware="gpu-t4", lo=0, hi=2)
    with pytest.raises(PublishError) as err:
        plan_deployment(client, DeploymentRequest("alice", "prod", model="alice/other"))
    assert err.value.field == "model" and "cannot be changed" in str(err.value)


def test_a_deployment_is_created_under_the_tokens_account_only(api, client):
    request = DeploymentRequest("acme", "prod", model="alice/pregunta", hardware="gpu-t4")
    with pytest.raises(PublishError) as err:
        plan_deployment(client, request)
    assert err.value.field == "owner" and "--owner alice" in err.value.fix


def test_creating_needs_a_model_and_hardware(api, client):
    with pytest.raises(PublishError) as err:
        plan_deployment(client, DeploymentRequest("alice", "prod", model="alice/pregunta"))
    assert err.value.field == "hardware" and "--hardware" in str(err.value)


def test_a_model_that_was_never_pushed_is_named(api, client):
    with pytest.raises(PublishError) as err:
        plan_deployment(client, DeploymentRequest("alice", "prod", model="alice/nope", hardware="gpu-t4"))
    assert "alice/nope was not found" in str(err.value) and "scripts/push r8.im/alice/nope" in err.value.fix


def test_the_fake_refuses_a_wrong_token(api):
    client = make_client(ReplicateSettings(api_token="r8_wrong", base_url=api.url))
    from replicate.exceptions import ReplicateError

    with pytest.raises(ReplicateError) as err:
        client.accounts.current()
    assert err.value.status == 401
