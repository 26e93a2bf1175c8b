"""One prediction: prompt, length check, decoding, clean streamed text and its metrics. No torch."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import ErrorCode, IncompleteAnswer, InputError
from .cancel import Cancel
from .params import MAX_SEED, Request, SamplingParams
from .prompts import build_prompt
from .textstream import AnswerText

logger = logging.getLogger(__name__)


class TokenEngine(Protocol):
    """What an answer needs from the model (llmserve.engine.model.Engine in production)."""

    context_length: int
    has_chat_template: bool
    healthy: bool  # False once the engine can serve nothing more (errors.EngineBroken)
    fault: str  # why, when it is not healthy

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...
    def check_json_schema(self, schema: str) -> None: ...  # raises InputError if it cannot constrain to it
    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, cancel: Cancel | None = None
    ) -> Iterator[int]: ...
    def close(self) -> None: ...


@dataclass
class Stats:
    """Per-prediction measurements, recorded as Cog metrics."""

    seed: int
    input_token_count: int
    output_token_count: int = 0
    time_to_first_token: float | None = None  # seconds from handing the prompt to the engine to the first token
    decode_seconds: float = 0.0  # from the first new token to the last
    stop_reason: str = "interrupted"  # until it ends by "eos", "stop_sequence" or "max_new_tokens"
    json_complete: bool | None = None  # for a json_schema answer: whether its whole text parses as JSON

    @property
    def tokens_per_second(self) -> float:
        """Decode speed: tokens after the first over the time they took; 0 with fewer than two tokens."""
        if self.output_token_count < 2 or self.decode_seconds <= 0:
            return 0.0
        return (self.output_token_count - 1) / self.decode_seconds

    def metrics(self) -> dict[str, float | int | str]:
        values = {
            "input_token_count": self.input_token_count,
            "output_token_count": self.output_token_count,
            "time_to_first_token": self.time_to_first_token,
            "tokens_per_second": self.tokens_per_second,
            "seed": self.seed,
            "stop_reason": self.stop_reason,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Prepared:
    """A request turned into token ids, checked against the context, ready to decode."""

    prompt_ids: list[int]
    stop_sequences: tuple[str, ...]
    sampling: SamplingParams
    seed_was_random: bool = False


class Answerer:
    """Answers requests with one engine: prepare() checks and tokenizes, stream() yields the text."""

    def __init__(self, engine: TokenEngine, *, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name

    def close(self) -> None:
        """Stop the engine; answers still streaming end with an error."""
        self.engine.close()

    def prepare(self, request: Request, *, fill_context_up_to: int | None = None) -> Prepared:
        """Build and tokenize the prompt; raise InputError if it does not fit the context. `fill_context_up_to`: instead
        of request.max_new_tokens, what the context has left after the prompt, up to this (at least min_new_tokens)."""
        prompt = build_prompt(
            pregunta=request.pregunta,
            system_prompt=request.system_prompt,
            prompt_template=request.prompt_template,
            history=request.history,
            chat_renderer=self.engine.apply_chat_template if self.engine.has_chat_template else None,
        )
        ids = self.engine.encode(prompt.text, add_special_tokens=prompt.add_special_tokens)
        if fill_context_up_to is not None:
            room = self.engine.context_length - len(ids)
            fit = max(min(fill_context_up_to, room), request.min_new_tokens, 1)
            request = dataclasses.replace(request, max_new_tokens=fit)
        self._check_fits(len(ids), request.max_new_tokens)
        if request.json_schema:
            self.engine.check_json_schema(request.json_schema)
        seed = request.seed if request.seed is not None else random.SystemRandom().randint(0, MAX_SEED)
        return Prepared(
            prompt_ids=ids,
            stop_sequences=tuple(dict.fromkeys(prompt.stop_sequences + request.stop_sequences)),
            sampling=request.sampling(seed),
            seed_was_random=request.seed is None,
        )

    def _check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        limit = self.engine.context_length
        if prompt_tokens + max_new_tokens <= limit:
            return
        if prompt_tokens >= limit:
            problem = f"the prompt is {prompt_tokens:,} tokens; the model's context is {limit:,} tokens."
            fix = "Shorten pregunta, system_prompt or messages (drop the oldest turns)."
        else:
            problem = (
                f"the prompt is {prompt_tokens:,} tokens and max_new_tokens is {max_new_tokens:,}: "
                f"{prompt_tokens + max_new_tokens:,} tokens against the model's context of {limit:,}."
            )
            fix = (
                f"Lower max_new_tokens to at most {limit - prompt_tokens:,}, or shorten pregunta, "
                "system_prompt or messages."
            )
        raise InputError(ErrorCode.PromptTooLong, "pregunta", problem, fix)

    def stream(
        self,
        prepared: Prepared,
        *,
        on_finish: Callable[[Stats], None] | None = None,
        cancel: Cancel | None = None,
        raise_incomplete: bool = True,
    ) -> Iterator[str]:
        """The answer's text as it is generated; `on_finish` gets the stats, even if cut short; `cancel` ends it.

        A json_schema answer cut before its JSON is complete then raises IncompleteAnswer (raise_incomplete=True).
        """
        # The start is logged now, in the caller's context (Cog's per-prediction log capture), not on first use.
        answer = _Answer(self, prepared, on_finish)
        chunks = self._stream(answer, cancel)
        return _checked(chunks, answer) if prepared.sampling.json_schema and raise_incomplete else chunks

    def _stream(self, answer: _Answer, cancel: Cancel | None) -> Iterator[str]:
        prepared = answer.prepared
        tokens = self.engine.generate(prepared.prompt_ids, prepared.sampling, cancel=cancel)
        try:
            for token_id in tokens:
                if chunk := answer.push(token_id):
                    yield chunk
                if answer.stopped:
                    break
            else:
                if cancel is not None and cancel.is_set:
                    answer.stats.stop_reason = "canceled"
                else:
                    answer.exhausted()
            if tail := answer.finish():
                yield tail
        finally:
            tokens.close()
            answer.close()


def _checked(chunks: Iterator[str], answer: _Answer) -> Iterator[str]:
    """The chunks, then IncompleteAnswer if the answer's JSON did not end before max_new_tokens or a stop sequence."""
    yield from chunks  # closing this generator closes `chunks` too
    stats = answer.stats
    if stats.stop_reason in ("canceled", "interrupted") or stats.json_complete:
        return
    limit = answer.prepared.sampling.max_new_tokens
    if stats.stop_reason == "max_new_tokens":
        field, fix = "max_new_tokens", f"Raise max_new_tokens above {limit}, or ask for a shorter answer."
        problem = f"the answer reached max_new_tokens={limit} before its JSON was complete."
    elif stats.stop_reason == "stop_sequence":
        field, fix = "stop_sequences", "Remove the stop sequence that occurs inside the JSON answer."
        problem = "a stop sequence ended the answer before its JSON was complete."
    else:  # the grammar engine failed (logged by llmserve.engine.grammar)
        field, fix = "json_schema", "Try a simpler schema; report it with the schema if it recurs."
        problem = "the answer ended before its JSON was complete: the grammar engine reported an error."
    raise IncompleteAnswer(ErrorCode.IncompleteJson, field, problem, fix)


class _Answer:
    """One answer's text and stats as its tokens arrive."""

    def __init__(self, answerer: Answerer, prepared: Prepared, on_finish: Callable[[Stats], None] | None) -> None:
        self.prepared = prepared
        self.on_finish = on_finish
        self.stats = stats = Stats(seed=prepared.sampling.seed, input_token_count=len(prepared.prompt_ids))
        sampling = prepared.sampling
        if sampling.greedy:
            seed = "unused (greedy)"  # greedy decoding draws nothing: the seed cannot matter
        else:
            seed = f"{stats.seed}{' (random)' if prepared.seed_was_random else ''}"
        logger.info(
            "generating: model=%s seed=%s input_tokens=%d max_new_tokens=%d temperature=%s",
            answerer.model_name,
            seed,
            stats.input_token_count,
            prepared.sampling.max_new_tokens,
            prepared.sampling.temperature,
        )
        self.text = AnswerText(answerer.engine.decode, prepared.stop_sequences)
        self.start = time.perf_counter()
        self.first: float | None = None
        self._chunks: list[str] = []

    @property
    def stopped(self) -> bool:
        return self.text.stopped

    def push(self, token_id: int) -> str:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            self.stats.time_to_first_token = now - self.start
        self.stats.output_token_count += 1
        self.stats.decode_seconds = now - self.first
        chunk = self.text.push(token_id)
        self._chunks.append(chunk)
        return chunk

    def exhausted(self) -> None:
        """The engine ended the answer: max_new_tokens, or EOS."""
        full = self.stats.output_token_count == self.prepared.sampling.max_new_tokens
        self.stats.stop_reason = "max_new_tokens" if full else "eos"
        if self.first is None:  # EOS came first: it is the first token, though not part of the answer
            self.stats.time_to_first_token = time.perf_counter() - self.start

    def finish(self) -> str:
        tail = self.text.finish()
        if self.text.stopped:
            self.stats.stop_reason = "stop_sequence"
        if self.prepared.sampling.json_schema:
            self.stats.json_complete = _parses("".join(self._chunks) + tail)
        return tail

    def close(self) -> None:
        stats = self.stats
        logger.info(
            "finished: stop=%s output_tokens=%d tokens_per_second=%.2f",
            stats.stop_reason,
            stats.output_token_count,
            stats.tokens_per_second,
        )
        if self.on_finish is not None:
            self.on_finish(stats)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True
