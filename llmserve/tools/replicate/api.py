"""Replicate's names and its API client, shared by every tool that talks to Replicate."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...config import ReplicateSettings
from .errors import PublishCode, PublishError

if TYPE_CHECKING:
    from replicate import Client

REGISTRY = "r8.im"
TOKEN_URL = "https://replicate.com/account/api-tokens"
# Owners and names as Replicate's API takes them; a version id is hex.
_API_NAME = re.compile(r"[\w.-]+")
_VERSION = re.compile(r"[0-9a-f]+")
# A path component of a Docker image name, which r8.im/OWNER/MODEL must be: lowercase, digits, separators.
_IMAGE_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


@dataclass(frozen=True)
class ModelRef:
    """OWNER/NAME[:VERSION]: a model on Replicate (or a deployment, which has no version)."""

    owner: str
    name: str
    version: str | None = None

    @property
    def model(self) -> str:
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        return self.model + (f":{self.version}" if self.version else "")

    def prediction_target(self) -> dict[str, str]:
        """The keyword that replicate's predictions.create takes for it: the version if given, else the model."""
        return {"version": self.version} if self.version else {"model": self.model}


def parse_ref(text: str, *, version: bool = True, image: bool = False) -> ModelRef | None:
    """`OWNER/NAME[:VERSION]` as a ModelRef, or None; no VERSION unless `version`; with `image`, r8.im/'s rules."""
    rest, colon, tag = text.partition(":") if version else (text, "", "")
    parts = rest.removeprefix(f"{REGISTRY}/").split("/") if image else rest.split("/")
    name = _IMAGE_NAME if image else _API_NAME
    if len(parts) != 2 or not all(name.fullmatch(p) for p in parts) or (colon and not _VERSION.fullmatch(tag)):
        return None
    return ModelRef(parts[0], parts[1], tag or None)


def error_text(error) -> str:
    """One line for a replicate.exceptions.ReplicateError (its str() spans several)."""
    return f"Replicate HTTP {error.status} {error.title or ''}: {error.detail or ''}".strip(" :")


def parse_model_ref(ref: str, *, field_name: str = "model") -> tuple[str, str]:
    """`r8.im/OWNER/NAME` or `OWNER/NAME` -> (owner, name), each a valid image-name component; else E4003."""
    parsed = parse_ref(ref, version=False, image=True)
    if parsed is None:
        raise PublishError(
            PublishCode.BadModelRef,
            field_name,
            f"{ref!r} is not OWNER/NAME (optionally after {REGISTRY}/) in lowercase letters, digits, '-', '_' and '.', "
            "with no tag.",
            "Use the owner and name shown on the model's page, e.g. r8.im/alice/pregunta.",
        )
    return parsed.owner, parsed.name


def make_client(settings: ReplicateSettings) -> Client:
    """A replicate.Client for these settings; refuses before any request when there is no token."""
    if not settings.api_token:
        raise PublishError(
            PublishCode.MissingApiToken,
            "REPLICATE_API_TOKEN",
            "is not set; the Replicate API needs it for every request.",
            f"Create a token at {TOKEN_URL} and `export REPLICATE_API_TOKEN=r8_...`.",
        )
    import replicate

    return replicate.Client(api_token=settings.api_token, base_url=settings.base_url)
