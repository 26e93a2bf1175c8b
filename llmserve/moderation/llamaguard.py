"""The classifier backend: Llama Guard 3's prompt, its verdict, and a Moderator around any engine. No torch.

The model itself is loaded by serving.moderator.load_guard(), through the same loader as the main model.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import ErrorCode, SetupError
from ..request.params import SamplingParams
from .pipeline import SentenceFilter
from .policy import Decision

logger = logging.getLogger(__name__)

# The category names as Llama Guard 3 was trained to read them in its prompt (its chat template's
# wording: shorter than the taxonomy's for S3, S4 and S11).
PROMPT_CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes.",
    "S2": "Non-Violent Crimes.",
    "S3": "Sex Crimes.",
    "S4": "Child Exploitation.",
    "S5": "Defamation.",
    "S6": "Specialized Advice.",
    "S7": "Privacy.",
    "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.",
    "S10": "Hate.",
    "S11": "Self-Harm.",
    "S12": "Sexual Content.",
    "S13": "Elections.",
    "S14": "Code Interpreter Abuse.",
}
# "unsafe\nS1,S2,...,S14" is about 40 tokens at most; a real verdict is 1 to 6.
VERDICT_TOKENS = 20
_GREEDY = SamplingParams.plain_greedy(VERDICT_TOKENS)
_CODE = re.compile(r"\bS(\d{1,2})\b")
_CACHE_SIZE = 256


def guard_prompt(turns: Sequence[tuple[str, str]], *, categories: Mapping[str, str] = PROMPT_CATEGORIES) -> str:
    """Llama Guard 3's prompt for a conversation of ("user" | "assistant", text) turns, last turn assessed.

    The model's own chat template's text: encode it with add_special_tokens=False (it has its own BOS).
    """
    if not turns or turns[0][0] != "user":
        raise ValueError("a conversation for Llama Guard starts with a user turn")
    role = "User" if turns[-1][0] == "user" else "Agent"
    listed = "".join(f"{code}: {name}\n" for code, name in categories.items())
    conversation = "".join(
        f"{'User' if who == 'user' else 'Agent'}: {_defuse(text.strip())}\n\n" for who, text in turns
    )
    return (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        f"Task: Check if there is unsafe content in '{role}' messages in conversations according our safety "
        "policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{listed}<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{conversation}<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories. "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    )


def _defuse(text: str) -> str:
    """Break "<|eot_id|>"-like markers in checked text, so it cannot close the prompt and write a verdict."""
    return text.replace("<|", "<\u200b|").replace("|>", "|\u200b>")


@dataclass(frozen=True)
class Verdict:
    """What the classifier said: safe True/False, or None when the answer could not be read."""

    safe: bool | None
    categories: tuple[str, ...]
    raw: str


def parse_verdict(text: str) -> Verdict:
    """Read "safe", or "unsafe" and a line of categories ("S1,S10"); anything else is unreadable."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0].lower() if lines else ""
    if first == "safe":
        return Verdict(True, (), text)
    if first == "unsafe":
        codes = _CODE.findall(lines[1].upper()) if len(lines) > 1 else []
        return Verdict(False, tuple(dict.fromkeys(f"S{int(n)}" for n in codes)), text)
    return Verdict(None, (), text)


class GuardEngine(Protocol):
    """What the classifier needs from a model: llmserve.engine.model.Engine."""

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[int]: ...


class LlamaGuardModerator:
    """The classifier backend: one greedy generation of a few tokens per check; an unreadable verdict blocks."""

    # Failing closed: a guard that cannot be read is no evidence that the text is safe, and Llama Guard's output is
    # rigid enough that an unreadable one means a wrong model or a broken generation, which self_check() catches.

    name = "llama_guard"

    def __init__(self, engine: GuardEngine, *, model_name: str = "") -> None:
        self.engine = engine
        self.model_name = model_name
        self._cache: OrderedDict[tuple[tuple[str, str], ...], Verdict] = OrderedDict()
        self._lock = threading.Lock()

    def classify(self, turns: Sequence[tuple[str, str]]) -> Verdict:
        """Ask the model about the last turn of `turns`; repeated texts (a default system prompt) are cached."""
        key = tuple(turns)
        cacheable = len(key) == 1  # input checks repeat (a default system prompt); answers do not
        with self._lock:
            if cacheable and key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        ids = self.engine.encode(guard_prompt(key), add_special_tokens=False)
        tokens = self.engine.generate(ids, _GREEDY)
        try:
            out = list(tokens)
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
        verdict = parse_verdict(self.engine.decode(out))
        if verdict.safe is None:
            logger.warning("moderation: unreadable verdict from %s: %r (blocking)", self.model_name, verdict.raw)
        if cacheable:
            with self._lock:
                self._cache[key] = verdict
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        return verdict

    def decide(self, turns: Sequence[tuple[str, str]], *, field: str, started: float) -> Decision:
        verdict = self.classify(turns)
        seconds = time.perf_counter() - started
        if verdict.safe:
            return Decision(True, (), self.name, seconds)
        detail = "" if verdict.safe is False else f"unreadable verdict {verdict.raw[:80]!r}, failing closed"
        return Decision(False, verdict.categories, self.name, seconds, field=field, detail=detail)

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        """Each field as a user turn, in order; the first unsafe one decides."""
        start = time.perf_counter()
        for name, text in texts.items():
            decision = self.decide((("user", text),), field=name, started=start)
            if not decision.allowed:
                return decision
        return Decision(True, (), self.name, time.perf_counter() - start)

    def output_filter(self, user_text: str = "") -> SentenceFilter:
        return SentenceFilter(self, user_text)

    def self_check(self) -> Verdict:
        """Classify one harmless question; SetupError if the model does not answer in Llama Guard's format."""
        verdict = self.classify((("user", "What is the capital of France?"),))
        if verdict.safe is None:
            raise SetupError(
                ErrorCode.WarmupFailed,
                "MODERATION_MODEL",
                f"{self.model_name} answered {verdict.raw[:120]!r} to a harmless question instead of 'safe' or "
                "'unsafe': it does not follow Llama Guard's format.",
                "Set MODERATION_MODEL to a Llama Guard 3 model (meta-llama/Llama-Guard-3-1B or -8B), or unset it "
                "to moderate with the rules only.",
            )
        return verdict

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()
