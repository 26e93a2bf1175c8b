"""scripts/deploy's plan against the fake Replicate API through the real replicate library: create, update, refusals."""

from __future__ import annotations

import pytest

from llmserve.config import ReplicateSettings
from llmserve.tools.replicate.api import make_client
from llmserve.tools.replicate.deploy import DeploymentRequest, apply_plan, plan_deployment
from llmserve.tools.replicate.errors import PublishCode, PublishError
from tests.helpers.fakereplicate import TOKEN


@pytest.fixture
def client(api):
    return make_client(ReplicateSettings(api_token=TOKEN, base_url=api.url))


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
