"""scripts/push and scripts/deploy's error codes: tools, logins, names and tokens, checked before anything is sent."""

from __future__ import annotations

from enum import StrEnum

from ...errors import LLMServeError


class PublishCode(StrEnum):
    ToolMissing = "E4001"
    NotLoggedIn = "E4002"
    BadModelRef = "E4003"
    MissingApiToken = "E4004"  # also for the Replicate targets of scripts/evaluate and scripts/loadtest
    BadDeployment = "E4005"


class PublishError(LLMServeError, RuntimeError):
    """scripts/push or scripts/deploy cannot go ahead: a missing tool, login or token, or a bad argument."""
