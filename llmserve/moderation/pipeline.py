"""Moderation around a stream: backends chained, MODERATION's stages applied, and the answer filtered as it flows."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from .policy import Decision, Moderator, OutputFilter, log_decision, moderation_metrics, output_blocked

# Where a model-backed output filter asks its model: after a sentence, or after this many characters without one.
_SENTENCE_END = re.compile(r"[.!?\u2026](?=\s)|\n")
_MAX_HELD_CHARS = 500


class PassThroughFilter:
    """The output stage when it is off: everything passes, nothing is checked."""

    backend = "off"
    blocked: Decision | None = None
    seconds = 0.0

    def push(self, chunk: str) -> str:
        return chunk

    def finish(self) -> str:
        return ""


class SentenceJudge(Protocol):
    """A model-backed backend (Llama Guard, the trained classifier): one verdict on a conversation so far."""

    name: str

    def decide(self, turns: Sequence[tuple[str, str]], *, field: str, started: float) -> Decision: ...


class SentenceFilter:
    """Holds back the sentence being written; at each sentence end, asks the model about the answer so far.

    A run of text without a sentence end is checked every _MAX_HELD_CHARS characters, at a space.
    """

    # Asking at every token would cost a model call per token; a sentence is the smallest unit it judges well.

    def __init__(self, judge: SentenceJudge, user_text: str) -> None:
        self.judge = judge
        self.backend = judge.name
        self.user_text = user_text
        self.blocked: Decision | None = None
        self.seconds = 0.0
        self.checks = 0
        self._sent = ""
        self._pending = ""

    def push(self, chunk: str) -> str:
        if self.blocked is not None or not chunk:
            return ""
        self._pending += chunk
        cut = 0
        for match in _SENTENCE_END.finditer(self._pending):
            cut = match.end()
        if not cut and len(self._pending) > _MAX_HELD_CHARS:
            space = self._pending.rfind(" ")
            cut = space if space > 0 else len(self._pending)
        return self._release(cut) if cut else ""

    def finish(self) -> str:
        if self.blocked is not None:
            return ""
        if not self._pending.strip():  # whitespace needs no verdict
            out, self._pending = self._pending, ""
            return out
        return self._release(len(self._pending))

    def _release(self, cut: int) -> str:
        start = time.perf_counter()
        answer = self._sent + self._pending[:cut]
        decision = self.judge.decide((("user", self.user_text), ("assistant", answer)), field="output", started=start)
        self.seconds += decision.seconds
        self.checks += 1
        if not decision.allowed:
            self.blocked = Decision(False, decision.categories, self.backend, self.seconds, "output", decision.detail)
            self._pending = ""
            log_decision(self.blocked, "output")
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self._sent += out
        return out


class ChainedFilter:
    """Text goes through each filter in turn (rules, then the classifier); the first block wins."""

    def __init__(self, filters: Sequence[OutputFilter]) -> None:
        self.filters = list(filters)
        self.backend = "+".join(f.backend for f in self.filters)

    @property
    def blocked(self) -> Decision | None:
        return next((f.blocked for f in self.filters if f.blocked is not None), None)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.filters)

    def push(self, chunk: str) -> str:
        for f in self.filters:
            chunk = f.push(chunk)
            if self.blocked is not None:
                return ""
        return chunk

    def finish(self) -> str:
        text = ""
        for f in self.filters:
            text = f.finish() if not text else f.push(text) + f.finish()
            if self.blocked is not None:
                return ""
        return text


class CombinedModerator:
    """Rules first (cheap; a rule block skips the classifier), then the classifier."""

    def __init__(self, backends: Sequence[Moderator]) -> None:
        self.backends = list(backends)
        self.name = "+".join(b.name for b in self.backends)

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        seconds = 0.0
        for backend in self.backends:
            decision = backend.check_input(texts)
            seconds += decision.seconds
            if not decision.allowed:
                return Decision(False, decision.categories, decision.backend, seconds, decision.field, decision.detail)
        return Decision(True, (), self.name, seconds)

    def output_filter(self, user_text: str = "") -> OutputFilter:
        return ChainedFilter([b.output_filter(user_text) for b in self.backends])


class StagedModerator:
    """What build_moderator returns: MODERATION's stages in front of the configured backend(s)."""

    def __init__(self, backend: Moderator, stages: frozenset[str]) -> None:
        self.backend = backend
        self.stages = stages
        self.name = backend.name

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        if "input" not in self.stages:
            return Decision(True, (), "off")
        decision = self.backend.check_input({k: v for k, v in texts.items() if v and v.strip()})
        log_decision(decision, "input")
        return decision

    def output_filter(self, user_text: str = "") -> OutputFilter:
        if "output" not in self.stages:
            return PassThroughFilter()
        return self.backend.output_filter(user_text)

    def close(self) -> None:
        for backend in getattr(self.backend, "backends", [self.backend]):
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def moderate_stream(
    chunks: Iterator[str],
    filt: OutputFilter,
    *,
    input_decision: Decision | None = None,
    on_metrics: Callable[[dict[str, float | int]], None] | None = None,
) -> Iterator[str]:
    """Yield only the text `filt` has checked; when it blocks, close `chunks` and raise output_blocked().

    `on_metrics` gets moderation_metrics(input_decision, filt) at the end, however the stream ends.
    """
    try:
        for chunk in chunks:
            out = filt.push(chunk)
            if out:
                yield out
            if filt.blocked is not None:
                break
        tail = filt.finish() if filt.blocked is None else ""
        if tail:
            yield tail
        if filt.blocked is not None:
            raise output_blocked(filt.blocked)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stops generation: the engine frees the request's slot
        if on_metrics is not None:
            on_metrics(moderation_metrics(input_decision, filt))
