"""scripts/loadtest's error codes: its target and options, checked before the first request, and the server."""

from __future__ import annotations

from enum import StrEnum

from ...errors import LLMServeError


class LoadTestCode(StrEnum):
    BadLoadTarget = "E6001"
    BadLoadOption = "E6002"
    ServerNotReady = "E6003"


class LoadTestError(LLMServeError, ValueError):
    """scripts/loadtest cannot start: a bad target or option, or a server that is not ready."""
