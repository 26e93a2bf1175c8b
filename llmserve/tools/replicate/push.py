"""scripts/push: check cog, Docker and the r8.im login, then run `cog push` from the project root."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ...config import PROJECT_ROOT, DockerSettings
from .api import REGISTRY, parse_model_ref
from .errors import PublishCode, PublishError

COG_INSTALL = (
    "sudo curl -o /usr/local/bin/cog -L "
    '"https://github.com/replicate/cog/releases/latest/download/cog_$(uname -s)_$(uname -m)" '
    "&& sudo chmod +x /usr/local/bin/cog"
)


def registry_login(config_dir: Path, host: str = REGISTRY) -> str | None:
    """Where `cog push` will find credentials for `host`, read as cog reads them, or None."""
    # cog asks the credential store that config.json names (credsStore), then falls back to config.json's `auths`;
    # `cog login` writes to the same places.
    config_path = config_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise PublishError(
            PublishCode.NotLoggedIn, "DOCKER_CONFIG", f"{config_path} cannot be read: {e}.", "Fix or remove that file."
        ) from e
    store = config.get("credsStore")
    helper = shutil.which(f"docker-credential-{store}") if store else None
    if helper and _helper_has_secret(helper, host):
        return f"the credential store {store!r} (docker-credential-{store})"
    entry = config.get("auths", {}).get(host) or {}
    if any(entry.get(key) for key in ("auth", "password", "identitytoken", "registrytoken")):
        return str(config_path)
    return None


def _helper_has_secret(helper: str, host: str) -> bool:
    """`docker-credential-* get` with the host on stdin answers JSON with a Secret, or fails."""
    try:
        got = subprocess.run([helper, "get"], input=host, capture_output=True, text=True, timeout=30)
        return got.returncode == 0 and bool(json.loads(got.stdout).get("Secret"))
    except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError):
        return False


def weights_warning(weights_dir: Path) -> str | None:
    """A warning when the image would be built without baked-in weights (docs/deploy.md)."""
    if weights_dir.is_dir() and any(p.is_file() for p in weights_dir.rglob("*")):
        return None
    return (
        f"{weights_dir} is empty: the image will hold no weights, and every new instance on Replicate will "
        "download them at boot (slow cold starts, and failures when the hub is unreachable). "
        "Run `make weights` first."
    )


def _on_path(tool: str, problem: str, fix: str) -> str:
    """The executable `tool` on PATH, or E4001 ToolMissing naming it."""
    found = shutil.which(tool)
    if found is None:
        raise PublishError(PublishCode.ToolMissing, tool, problem, fix)
    return found


def check_push_ready(docker: DockerSettings, *, docker_timeout_s: float = 60.0) -> str:
    """Raise PublishError naming the first missing prerequisite of `cog push`; return the cog executable."""
    cog = _on_path(
        "cog",
        "the cog command-line tool is not on PATH (it is a binary from GitHub releases, not the pip package).",
        f"Install it: {COG_INSTALL}",
    )
    docker_bin = _on_path(
        "docker",
        "Docker is not on PATH; cog builds and pushes the image with it.",
        "Install Docker Engine (https://docs.docker.com/engine/install/) and start it.",
    )
    try:
        info = subprocess.run(
            [docker_bin, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=docker_timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        raise PublishError(
            PublishCode.ToolMissing,
            "docker",
            f"`docker info` did not answer within {docker_timeout_s:.0f} s.",
            "Check that the Docker daemon is running and responsive.",
        ) from e
    if info.returncode != 0:
        said = (info.stderr or info.stdout).strip().splitlines()
        raise PublishError(
            PublishCode.ToolMissing,
            "docker",
            f"the Docker daemon is not reachable (`docker info`: {said[-1] if said else f'exit {info.returncode}'}).",
            "Start Docker (`sudo systemctl start docker`), and make sure your user may use it "
            "(`sudo usermod -aG docker $USER`, then log in again).",
        )
    if registry_login(docker.config_dir) is None:
        raise PublishError(
            PublishCode.NotLoggedIn,
            REGISTRY,
            f"no login for {REGISTRY} in {docker.config_dir / 'config.json'} or its credential store.",
            "Run `cog login` (it asks for the token shown at https://replicate.com/auth/token; "
            "in CI: `cog login --token-stdin`). That token is not the r8_ API token.",
        )
    return cog


def main(argv: Sequence[str]) -> int:
    """Check cog, Docker and the r8.im login, then run `cog push r8.im/OWNER/MODEL` from the project root."""
    argv = list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="scripts/push", description=main.__doc__, epilog="Arguments after -- go to `cog push` unchanged."
    )
    parser.add_argument("image", nargs="?", metavar="[r8.im/]OWNER/MODEL", help="the model on Replicate")
    parser.add_argument("--owner", help="instead of the positional argument: the Replicate user or organization")
    parser.add_argument("--model", help="instead of the positional argument: the model's name")
    parser.add_argument("--dry-run", action="store_true", help="check everything, print the command, run nothing")
    args = parser.parse_args(argv)
    if bool(args.image) == bool(args.owner or args.model) or not (args.image or (args.owner and args.model)):
        parser.error("give r8.im/OWNER/MODEL, or both --owner and --model")
    owner, model = parse_model_ref(args.image or f"{args.owner}/{args.model}", field_name="image")
    image = f"{REGISTRY}/{owner}/{model}"

    cog = check_push_ready(DockerSettings.from_env())
    warning = weights_warning(PROJECT_ROOT / "weights")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    command = [cog, "push", image, *extra]
    print(f"in {PROJECT_ROOT}: {' '.join(['cog', *command[1:]])}", flush=True)
    if args.dry_run:
        print("dry run: nothing was built or pushed")
        return 0
    print(f"the model must exist first: create {owner}/{model} at https://replicate.com/create", flush=True)
    os.chdir(PROJECT_ROOT)  # cog reads cog.yaml from the working directory
    os.execv(cog, command)
    return 0  # not reached
