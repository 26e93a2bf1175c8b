"""scripts/deploy: create or update a Replicate Deployment through the replicate library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...config import ReplicateSettings
from .api import TOKEN_URL, error_text, make_client, parse_model_ref
from .errors import PublishCode, PublishError

if TYPE_CHECKING:
    from replicate import Client
    from replicate.deployment import Deployment


@dataclass(frozen=True)
class DeploymentRequest:
    """What the user asked for; None means: keep the current value (update) or use the default (create)."""

    owner: str
    name: str
    model: str | None = None  # OWNER/MODEL; a deployment's model cannot change after creation
    version: str | None = None  # None: the model's latest version
    hardware: str | None = None  # a SKU such as gpu-t4, gpu-l40s, gpu-a100-large, gpu-h100
    min_instances: int | None = None  # instances kept warm; above 0 there are no cold boots, and they are billed
    max_instances: int | None = None  # the autoscaling ceiling


@dataclass(frozen=True)
class DeploymentPlan:
    action: str  # "create", "update" or "none" (already as asked)
    owner: str
    name: str
    body: dict[str, Any]  # the JSON the replicate library will send
    notes: list[str] = field(default_factory=list)

    @property
    def request_line(self) -> str:
        """The HTTP request the replicate library sends for this plan (paths from replicate 1.0.7)."""
        if self.action == "create":
            return "POST /v1/deployments"
        return f"PATCH /v1/deployments/{self.owner}/{self.name}"


# Defaults for a new deployment: scale to zero when idle, and one instance at most until asked for more.
CREATE_DEFAULTS = {"min_instances": 0, "max_instances": 1}


def deployment_url(owner: str, name: str) -> str:
    return f"https://replicate.com/deployments/{owner}/{name}"


def plan_deployment(client: Client, request: DeploymentRequest) -> DeploymentPlan:
    """Read the deployment, model, version, account and hardware; return the create or update to send."""
    _check_instances(request.min_instances, request.max_instances)
    current = _get_deployment(client, request.owner, request.name)
    notes: list[str] = []
    if current is None:
        account = client.accounts.current().username
        if account != request.owner:
            raise _bad_deployment(
                "owner",
                f"deployments are created under the token's account, {account!r}, not {request.owner!r}.",
                f"Use --owner {account}, or a token of {request.owner}.",
            )
        if request.model is None or request.hardware is None:
            raise _bad_deployment(
                "model" if request.model is None else "hardware",
                f"deployment {request.owner}/{request.name} does not exist yet, and creating it needs both "
                "--model OWNER/MODEL and --hardware.",
                "Add the missing option (scripts/deploy --help lists the hardware).",
            )
        min_i = CREATE_DEFAULTS["min_instances"] if request.min_instances is None else request.min_instances
        max_i = CREATE_DEFAULTS["max_instances"] if request.max_instances is None else request.max_instances
        _check_instances(min_i, max_i)
        body = {
            "name": request.name,
            "model": request.model,
            "version": _resolve_version(client, request.model, request.version, notes),
            "hardware": request.hardware,
            "min_instances": min_i,
            "max_instances": max_i,
        }
        _check_hardware(client, request.hardware, notes)
        return DeploymentPlan("create", request.owner, request.name, body, notes)

    release = current.current_release
    if release is None:
        raise _bad_deployment("name", f"{current.id} has no release to update.", "Delete it on replicate.com.")
    if request.model is not None and request.model != release.model:
        raise _bad_deployment(
            "model",
            f"{current.id} serves {release.model}; a deployment's model cannot be changed.",
            "Leave out --model, or create a new deployment with another --name.",
        )
    config = release.configuration
    wanted = {
        "version": _resolve_version(client, release.model, request.version, notes),
        "hardware": request.hardware or config.hardware,
        "min_instances": config.min_instances if request.min_instances is None else request.min_instances,
        "max_instances": config.max_instances if request.max_instances is None else request.max_instances,
    }
    _check_instances(wanted["min_instances"], wanted["max_instances"])
    have = {
        "version": release.version,
        "hardware": config.hardware,
        "min_instances": config.min_instances,
        "max_instances": config.max_instances,
    }
    body = {key: value for key, value in wanted.items() if value != have[key]}
    if "hardware" in body:
        _check_hardware(client, body["hardware"], notes)
    return DeploymentPlan("update" if body else "none", request.owner, request.name, body, notes)


def apply_plan(client: Client, plan: DeploymentPlan) -> Deployment | None:
    """Send the plan through the replicate library; returns its Deployment (None when nothing changes)."""
    if plan.action == "create":
        return client.deployments.create(**plan.body)
    if plan.action == "update":
        return client.deployments.update(plan.owner, plan.name, **plan.body)
    return None


def how_to_call(owner: str, name: str) -> str:
    ref = f"{owner}/{name}"
    return "\n".join(
        [
            f"  {deployment_url(owner, name)}",
            "Call it:",
            f'  scripts/client.py --deployment {ref} "¿Cuál es la capital de Francia?" [--stream]',
            f'  python: replicate.deployments.get("{ref}").predictions.create(input={{"pregunta": "..."}})',
            f"  curl -s -X POST https://api.replicate.com/v1/deployments/{ref}/predictions "
            '-H "Authorization: Bearer $REPLICATE_API_TOKEN" -H "Content-Type: application/json" '
            """-H "Prefer: wait" -d '{"input": {"pregunta": "..."}}'""",
        ]
    )


def main(argv: Sequence[str]) -> int:
    """Create or update a Replicate Deployment: hardware, min and max instances, and the model version."""
    parser = argparse.ArgumentParser(
        prog="scripts/deploy",
        description=main.__doc__,
        epilog="Needs REPLICATE_API_TOKEN. Options left out keep the deployment's current value; a new deployment "
        f"gets --min-instances {CREATE_DEFAULTS['min_instances']} --max-instances {CREATE_DEFAULTS['max_instances']}.",
    )
    parser.add_argument("deployment", nargs="?", metavar="OWNER/NAME", help="the deployment (or --owner and --name)")
    parser.add_argument("--owner", help="the deployment's owner: the account of REPLICATE_API_TOKEN")
    parser.add_argument("--name", help="the deployment's name")
    parser.add_argument("--model", metavar="OWNER/MODEL", help="the model to serve (needed to create)")
    parser.add_argument("--version", help="the model version id (default: the model's latest version)")
    parser.add_argument("--hardware", help="e.g. gpu-t4, gpu-l40s, gpu-a100-large, gpu-h100 (needed to create)")
    parser.add_argument("--min-instances", type=_non_negative, help="instances always on: no cold boots, billed idle")
    parser.add_argument("--max-instances", type=_non_negative, help="the most instances autoscaling may start")
    parser.add_argument("--dry-run", action="store_true", help="read only: print the request, send no change")
    args = parser.parse_args(argv)
    if bool(args.deployment) == bool(args.owner or args.name) or not (args.deployment or (args.owner and args.name)):
        parser.error("give OWNER/NAME, or both --owner and --name")
    owner, name = parse_model_ref(args.deployment or f"{args.owner}/{args.name}", field_name="deployment")
    model = "/".join(parse_model_ref(args.model)) if args.model else None
    request = DeploymentRequest(owner, name, model, args.version, args.hardware, args.min_instances, args.max_instances)

    from replicate.exceptions import ReplicateError

    client = make_client(ReplicateSettings.from_env())
    try:
        plan = plan_deployment(client, request)
        for note in plan.notes:
            print(f"note: {note}", file=sys.stderr)
        if plan.action == "none":
            print(f"deployment {owner}/{name} is already as asked: nothing to send")
            print(how_to_call(owner, name))
            return 0
        print(f"{plan.action} deployment {owner}/{name}: {plan.request_line}")
        print(json.dumps(plan.body, indent=2))
        if args.dry_run:
            print("dry run: nothing was sent")
            return 0
        deployment = apply_plan(client, plan)
    except ReplicateError as e:
        raise _api_error(e) from e
    release = deployment.current_release
    config = release.configuration
    print(
        f"{'created' if plan.action == 'create' else 'updated'} {deployment.id}: release {release.number}, "
        f"{release.model}:{release.version}, {config.hardware}, "
        f"{config.min_instances} to {config.max_instances} instances"
    )
    print(how_to_call(deployment.owner, deployment.name))
    return 0


def _non_negative(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 0")
    return int(raw)


def _check_instances(min_instances: int | None, max_instances: int | None) -> None:
    if max_instances is not None and max_instances < 1:
        raise _bad_deployment("max_instances", "is 0: nothing could serve a request.", "Use 1 or more.")
    if min_instances is not None and max_instances is not None and min_instances > max_instances:
        raise _bad_deployment(
            "min_instances",
            f"min_instances={min_instances} is above max_instances={max_instances}.",
            "Lower --min-instances or raise --max-instances.",
        )


def _get_deployment(client: Client, owner: str, name: str) -> Deployment | None:
    from replicate.exceptions import ReplicateError

    try:
        return client.deployments.get(f"{owner}/{name}")
    except ReplicateError as e:
        if e.status == 404:
            return None
        raise


def _resolve_version(client: Client, model: str, version: str | None, notes: list[str]) -> str:
    from replicate.exceptions import ReplicateError

    try:
        found = client.models.get(model)
    except ReplicateError as e:
        if e.status != 404:
            raise
        raise _bad_deployment(
            "model", f"{model} was not found on Replicate.", f"Push it first: scripts/push r8.im/{model}."
        ) from e
    if version is None:
        if found.latest_version is None:
            raise _bad_deployment("version", f"{model} has no version yet.", f"Push one: scripts/push r8.im/{model}.")
        notes.append(f"version: {model}'s latest, {found.latest_version.id}")
        return found.latest_version.id
    try:
        return found.versions.get(version).id
    except ReplicateError as e:
        if e.status != 404:
            raise
        raise _bad_deployment(
            "version", f"{model} has no version {version!r}.", "Leave out --version for the latest one."
        ) from e


def _check_hardware(client: Client, hardware: str, notes: list[str]) -> None:
    """Validate the SKU against GET /v1/hardware; when that list cannot be had, send it unchecked."""
    import httpx
    from replicate.exceptions import ReplicateError

    try:
        skus = [h.sku for h in client.hardware.list()]
    except (ReplicateError, httpx.HTTPError) as e:
        notes.append(f"hardware: the list could not be read ({e!r}); {hardware!r} is sent unchecked")
        return
    if hardware not in skus:
        raise _bad_deployment(
            "hardware", f"{hardware!r} is not hardware Replicate offers you.", f"Use one of: {', '.join(skus)}."
        )


def _bad_deployment(field_name: str, problem: str, fix: str) -> PublishError:
    return PublishError(PublishCode.BadDeployment, field_name, problem, fix)


def _api_error(e: Exception) -> PublishError:
    """A ReplicateError (refused token, validation, server error) in the project's error form."""
    said = error_text(e) if e.status else str(e.type)
    if e.status == 401:
        return PublishError(
            PublishCode.MissingApiToken, "REPLICATE_API_TOKEN", f"was refused ({said}).", f"Check it at {TOKEN_URL}."
        )
    return _bad_deployment("deployment", f"the Replicate API answered: {said}.", "Fix what it names and retry.")
