"""The engine tests' helpers: transformers' reference decoding, sampling settings, a sink to wait on."""

from __future__ import annotations

import threading

import torch
from transformers import AutoModelForCausalLM

from llmserve.engine.model import Engine
from llmserve.engine.scheduler import Event
from llmserve.request.params import SamplingParams


def params(**overrides) -> SamplingParams:
    """Greedy sampling for 24 tokens, with any field overridden."""
    values = dict(
        max_new_tokens=24, min_new_tokens=0, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=0
    )
    values.update(overrides)
    return SamplingParams(**values)


def reference_greedy(model_dir, prompt_ids, n, **kwargs):
    """transformers' own greedy generate() of exactly `n` tokens, in float32: what the engine must equal."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, **kwargs)
    return out[0, len(prompt_ids) :].tolist()


class Recorder:
    """A scheduler sink that the test can wait on."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.outcome: BaseException | None = None
        self.done = False
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._changed:
            if event is None or isinstance(event, BaseException):
                self.done, self.outcome = True, event
            else:
                self.tokens.append(event)
            self._changed.notify_all()

    def wait(self, predicate, timeout: float = 120) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: predicate(self), timeout), "timed out"


def has_tokens(n: int):
    return lambda r: len(r.tokens) >= n or r.done


def finished(r: Recorder) -> bool:
    return r.done


def joining(engine: Engine, requests: list[tuple[list[int], int]]) -> list[list[int]]:
    """Greedy (prompt, new tokens) requests, each submitted once the one before has 3 tokens: each joins a
    batch already under way. Returns every request's tokens."""
    recorders = [Recorder() for _ in requests]
    for (prompt, n), recorder in zip(requests, recorders, strict=True):
        engine.scheduler.submit(prompt, params(max_new_tokens=n, min_new_tokens=n), recorder)
        recorder.wait(has_tokens(3))
    for r in recorders:
        r.wait(finished)
        assert r.outcome is None
    return [r.tokens for r in recorders]
