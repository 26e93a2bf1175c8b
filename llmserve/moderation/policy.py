"""The moderation policy's vocabulary: Llama Guard 3's categories, a Decision, the backends' interfaces, errors.

A `Moderator` checks inputs (`check_input`) and gives an `OutputFilter` per answer that releases checked text only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import ErrorCode, InputError, ModerationError

if TYPE_CHECKING:
    from ..request.params import Request

logger = logging.getLogger(__name__)

# Llama Guard 3's categories, the MLCommons hazard taxonomy.
CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
# MODERATION's values and the stages each one checks.
STAGES: dict[str, frozenset[str]] = {
    "off": frozenset(),
    "input": frozenset({"input"}),
    "output": frozenset({"output"}),
    "both": frozenset({"input", "output"}),
}


@dataclass(frozen=True)
class Decision:
    """One moderation verdict, for the caller to act on, log and record as metrics."""

    allowed: bool
    categories: tuple[str, ...] = ()  # Llama Guard codes, "S9"; empty when allowed, or for an unreadable verdict
    backend: str = "rules"  # "rules", "llama_guard", "rules+llama_guard", or "off" when the stage is disabled
    seconds: float = 0.0  # time spent deciding
    field: str | None = None  # the input field that was refused, or "output"
    detail: str = ""  # for logs: why, when the categories do not say it (an unreadable verdict)

    @property
    def label(self) -> str:
        """The categories by code and name: "S9 Indiscriminate Weapons"."""
        if self.categories:
            return ", ".join(f"{code} {CATEGORIES.get(code, 'Unknown category')}" for code in self.categories)
        return "an unreadable verdict from the moderation classifier" if self.detail else "an unnamed category"


class OutputFilter(Protocol):
    """Checks an answer as it streams; nothing leaves `push` or `finish` before it has been checked."""

    backend: str
    blocked: Decision | None  # None until the answer is stopped
    seconds: float  # time spent checking so far

    def push(self, chunk: str) -> str: ...
    def finish(self) -> str: ...


class Moderator(Protocol):
    name: str

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        """Check each field's text (field name -> text); never raises for a refusal, the caller does."""
        ...

    def output_filter(self, user_text: str = "") -> OutputFilter:
        """A filter for one answer; `user_text` is the question, which a classifier reads as context."""
        ...


def log_decision(decision: Decision, stage: str) -> None:
    """One log line per decision: stage, verdict, field, categories, backend, time."""
    logger.info(
        "moderation: %s %s field=%s categories=%s backend=%s %.1fms%s",
        stage,
        "allowed" if decision.allowed else "blocked",
        decision.field or "-",
        ",".join(decision.categories) or "-",
        decision.backend,
        decision.seconds * 1000,
        f" ({decision.detail})" if decision.detail else "",
    )


_FIX = (
    "Rephrase the question without asking for help to cause harm. If this is a mistake, the operator can "
    "extend the rules (MODERATION_RULES) or change MODERATION (docs/guardrails.md)."
)
_FIX_SELF_HARM = (
    "If you are thinking about suicide or hurting yourself, please talk to someone now: your local emergency "
    "number, or a crisis line (024 in Spain, 988 in the US)."
)


def input_texts(request: Request) -> dict[str, str]:
    """The texts of a validated request to check, by input field; `messages` joins the earlier turns."""
    texts = {
        "pregunta": request.pregunta,
        "system_prompt": request.system_prompt,
        "prompt_template": request.prompt_template,
        "messages": "\n".join(m.content for m in request.history),
    }
    return {name: text for name, text in texts.items() if text and text.strip()}


def refusal(decision: Decision) -> InputError:
    """The InputError for a refused question: E1010 ContentBlocked, naming the field and the category."""
    return InputError(
        ErrorCode.ContentBlocked,
        decision.field or "pregunta",
        f"is refused by the moderation policy: {decision.label}.",
        _FIX_SELF_HARM if "S11" in decision.categories else _FIX,
    )


def output_blocked(decision: Decision) -> ModerationError:
    """The error to raise when the output filter stops an answer: E5001 OutputBlocked, naming the category."""
    return ModerationError(
        ErrorCode.OutputBlocked,
        "output",
        f"was stopped by the moderation policy: {decision.label}. The text already streamed had been checked; "
        "nothing after it was sent.",
        _FIX_SELF_HARM if "S11" in decision.categories else _FIX,
    )


def moderation_metrics(
    input_decision: Decision | None = None, output: OutputFilter | None = None
) -> dict[str, float | int]:
    """Cog metrics for one prediction; a stage that is off records nothing."""
    metrics: dict[str, float | int] = {}
    seconds = 0.0
    if input_decision is not None and input_decision.backend != "off":
        metrics["moderation_input_blocked"] = int(not input_decision.allowed)
        seconds += input_decision.seconds
    if output is not None and output.backend != "off":
        metrics["moderation_output_blocked"] = int(output.blocked is not None)
        seconds += output.seconds
    if metrics:
        metrics["moderation_seconds"] = seconds
    return metrics
