"""scripts/evaluate's error codes: its dataset, target and judge, checked before the first question."""

from __future__ import annotations

from enum import StrEnum

from ...errors import LLMServeError


class EvalCode(StrEnum):
    BadDataset = "E3001"
    BadEvalTarget = "E3002"
    BadJudge = "E3003"


class EvalError(LLMServeError, RuntimeError):
    """scripts/evaluate cannot start or go on: a bad dataset, target or judge."""
