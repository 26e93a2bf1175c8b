"""Errors with a stable code that say what is wrong, the limit, and how to fix it."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Bad input: raised before any generation work.
    EmptyPregunta = "E1001"
    PromptTooLong = "E1002"
    BadPromptTemplate = "E1003"
    BadMessages = "E1004"
    UnknownRole = "E1005"
    OutOfRange = "E1006"
    MinAboveMax = "E1007"
    BadStopSequences = "E1008"
    TextTooLong = "E1009"
    ContentBlocked = "E1010"  # refused by the moderation policy (llmserve.moderation)
    # Configuration and model loading: raised by setup().
    BadConfig = "E2001"
    WeightsNotFound = "E2002"
    ModelLoadFailed = "E2003"
    WarmupFailed = "E2004"
    # scripts/evaluate: its dataset, target and judge, checked before the first question.
    BadDataset = "E3001"
    BadEvalTarget = "E3002"
    BadJudge = "E3003"
    # scripts/push and scripts/deploy: tools, logins and names, checked before anything is sent.
    ToolMissing = "E4001"
    NotLoggedIn = "E4002"
    BadModelRef = "E4003"
    MissingApiToken = "E4004"
    BadDeployment = "E4005"
    # Moderation of the answer: raised while streaming, once the output filter has stopped it.
    OutputBlocked = "E5001"
    # scripts/loadtest: its target and options, checked before the first request, and the server it loads.
    BadLoadTarget = "E6001"
    BadLoadOption = "E6002"
    ServerNotReady = "E6003"


class LLMServeError(Exception):
    """Base error: `str(err)` reads `E1006 OutOfRange: <field>: <problem> <fix>`."""

    def __init__(self, code: ErrorCode, field: str, problem: str, fix: str) -> None:
        self.code = code
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{code.value} {code.name}: {field}: {problem} {fix}")


class InputError(LLMServeError, ValueError):
    """A prediction input is invalid; the server stays healthy."""


class SetupError(LLMServeError, RuntimeError):
    """The model cannot be configured, found or loaded; the server fails setup."""


class EvalError(LLMServeError, RuntimeError):
    """scripts/evaluate cannot start: a bad dataset, target or judge."""


class PublishError(LLMServeError, RuntimeError):
    """scripts/push or scripts/deploy cannot go ahead: a missing tool, login or token, or a bad argument."""


class ModerationError(LLMServeError, RuntimeError):
    """The answer was stopped mid-stream by the moderation policy; nothing that triggered it was emitted."""


class LoadTestError(LLMServeError, ValueError):
    """scripts/loadtest cannot start: a bad target or option, or a server that is not ready."""
