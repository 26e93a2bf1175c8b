"""Errors with a stable code that say what is wrong, the limit, and how to fix it; the serving codes."""

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
    BadJsonSchema = "E1011"  # json_schema is not a schema, or the grammar engine cannot compile it
    # Configuration and model loading: raised by setup().
    BadConfig = "E2001"
    WeightsNotFound = "E2002"
    ModelLoadFailed = "E2003"
    WarmupFailed = "E2004"
    # Moderation of the answer: raised while streaming, once the output filter has stopped it.
    OutputBlocked = "E5001"
    # A json_schema answer ended (max_new_tokens, a stop sequence) before its JSON was complete.
    IncompleteJson = "E5003"
    # The engine itself failed (a device error): this server can answer nothing more.
    EngineBroken = "E5002"
    # The tools keep their own codes beside them: E3xxx in tools/evaluate, E4xxx in tools/replicate,
    # E6xxx in tools/loadtest.


class LLMServeError(Exception):
    """Base error: `str(err)` reads `E1006 OutOfRange: <field>: <problem> <fix>`; `code` is any code enum."""

    def __init__(self, code: StrEnum, field: str, problem: str, fix: str) -> None:
        self.code = code
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{code.value} {code.name}: {field}: {problem} {fix}")


class InputError(LLMServeError, ValueError):
    """A prediction input is invalid; the server stays healthy."""


class SetupError(LLMServeError, RuntimeError):
    """The model cannot be configured, found or loaded; the server fails setup."""


class ModerationError(LLMServeError, RuntimeError):
    """The answer was stopped mid-stream by the moderation policy; nothing that triggered it was emitted."""


class IncompleteAnswer(LLMServeError, RuntimeError):
    """A json_schema answer was cut before its JSON was complete: raised at its end rather than return broken JSON."""


class EngineBroken(LLMServeError, RuntimeError):
    """The device failed under the engine; every request ends with this, and the server reports itself unhealthy."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            ErrorCode.EngineBroken,
            "engine",
            f"the model's device failed ({type(cause).__name__}: {cause}); this server cannot answer any more.",
            "Restart the server (Replicate replaces an instance whose health check fails); report it if it recurs.",
        )
