"""What scripts/loadtest loads and with what: the target, the concurrency levels, the inputs, the GPU's price."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...config import PROJECT_ROOT
from ..inputs import AssignmentError, declared_inputs, input_types, parse_assignment
from ..openapi import SCHEMA_PATH
from ..replicate.api import parse_ref
from .cost import EXAMPLE_GPU_PRICES_PER_HOUR
from .errors import LoadTestCode, LoadTestError

DEFAULT_PREGUNTA = "¿Qué es el aprendizaje automático?"
# Short answers keep a sweep quick; raise it (--input max_new_tokens=...) to load the decode loop longer.
DEFAULT_MAX_NEW_TOKENS = 64
DEPLOYMENT_PREFIX = "replicate-deployment:"
MODEL_PREFIX = "replicate:"


@dataclass(frozen=True)
class Target:
    kind: str  # "local", "replicate-deployment" or "replicate-model"
    address: str  # the server's base URL, OWNER/NAME for a deployment, OWNER/MODEL[:VERSION] for a model

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def prediction_ref(self) -> dict[str, str]:
        """The keyword that `replicate.Client.predictions.create` takes for this target."""
        if self.kind == "replicate-deployment":
            return {"deployment": self.address}
        return parse_ref(self.address).prediction_target()


def parse_target(url: str) -> Target:
    """A loopback server URL, `replicate-deployment:OWNER/NAME` or `replicate:OWNER/MODEL[:VERSION]`."""
    if url.startswith(DEPLOYMENT_PREFIX):
        ref = url.removeprefix(DEPLOYMENT_PREFIX)
        if parse_ref(ref, version=False) is None:
            raise _bad_target(f"{ref!r} is not a deployment name.", f"Write {DEPLOYMENT_PREFIX}OWNER/NAME.")
        return Target("replicate-deployment", ref)
    if url.startswith(MODEL_PREFIX):
        ref = url.removeprefix(MODEL_PREFIX)
        if parse_ref(ref) is None:
            raise _bad_target(
                f"{ref!r} is not a Replicate model.",
                f"Write {MODEL_PREFIX}OWNER/MODEL:VERSION (the version id from the model's page), "
                f"or {MODEL_PREFIX}OWNER/MODEL for a model Replicate runs without a version.",
            )
        return Target("replicate-model", ref)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad_target(
            f"{url!r} is neither a server URL nor a Replicate target.",
            f"Pass the local server's base URL, like http://127.0.0.1:5000, or {DEPLOYMENT_PREFIX}OWNER/NAME, "
            f"or {MODEL_PREFIX}OWNER/MODEL:VERSION.",
        )
    if not is_loopback(parts.hostname):
        raise _bad_target(
            f"{parts.hostname} is not this machine: scripts/loadtest loads only servers on loopback "
            "(127.0.0.1, ::1, localhost).",
            f"Run it where the server runs, or load a Replicate deployment with {DEPLOYMENT_PREFIX}OWNER/NAME.",
        )
    base = f"{parts.scheme}://{parts.netloc}"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad_target(f"{url!r} has a path.", f"Give the server's base URL ({base}); /predictions is added to it.")
    return Target("local", base)


def _bad_target(problem: str, fix: str) -> LoadTestError:
    return LoadTestError(LoadTestCode.BadLoadTarget, "--url", problem, fix)


def bad_option(option: str, problem: str, fix: str) -> LoadTestError:
    return LoadTestError(LoadTestCode.BadLoadOption, option, problem, fix)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def concurrency_levels(spec: str) -> list[int]:
    """`8` -> 1, 2, 4, 8 (powers of two, then N); `1,4,8` -> exactly those."""
    try:
        numbers = [int(part) for part in spec.split(",")]
    except ValueError:
        raise bad_option(
            "--users", f"{spec!r} is not a number.", "Give a number of users (8) or a list (1,4,8)."
        ) from None
    if any(n < 1 for n in numbers):
        raise bad_option("--users", f"{spec!r} has a level below 1 user.", "Give levels of at least 1 user.")
    if len(numbers) > 1:
        return sorted(set(numbers))
    top = numbers[0]
    levels = [2**i for i in range(top.bit_length()) if 2**i < top]
    return levels + [top]


def load_input_types(path: Path = PROJECT_ROOT / SCHEMA_PATH) -> dict[str, str]:
    """Input name -> JSON type, from the schema the local server validates against (.cog/openapi_schema.json)."""
    try:
        return input_types(declared_inputs(json.loads(path.read_text(encoding="utf-8"))))
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise bad_option(
            "--input", f"the predictor's inputs cannot be read from {path} ({e}).", "Run scripts/openapi_schema."
        ) from e


def build_inputs(pregunta: str, pairs: Sequence[str], types: Mapping[str, str]) -> dict[str, Any]:
    """The request's inputs: pregunta, a short max_new_tokens, then each NAME=VALUE typed by the schema."""
    inputs: dict[str, Any] = {"pregunta": pregunta, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
    for pair in pairs:
        try:
            name, value = parse_assignment(pair, types)
        except AssignmentError as e:
            raise bad_option("--input", e.problem, e.fix) from None
        inputs[name] = value
    return inputs


def gpu_price(value: str) -> float:
    """A price in dollars per hour, or the name of one of EXAMPLE_GPU_PRICES_PER_HOUR."""
    if value in EXAMPLE_GPU_PRICES_PER_HOUR:
        return EXAMPLE_GPU_PRICES_PER_HOUR[value]
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not price >= 0:
        names = ", ".join(f"{k} (${v}/h)" for k, v in EXAMPLE_GPU_PRICES_PER_HOUR.items())
        raise bad_option(
            "--gpu-price-per-hour", f"{value!r} is not a price.", f"Give dollars per hour, or one of {names}."
        )
    return price
