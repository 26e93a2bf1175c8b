"""Helpers for the moderation tests: the labelled corpus, two sample answers, stand-ins for an engine and a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

from llmserve.request.params import SamplingParams
from tests.helpers import ROOT

CORPUS = json.loads((ROOT / "tests" / "data" / "moderation_corpus.json").read_text(encoding="utf-8"))
SAFE = [item["text"] for item in CORPUS["safe"]]
UNSAFE = [(item["text"], tuple(item["categories"])) for item in CORPUS["unsafe"]]

UNSAFE_ANSWER = "Sure, here it is. First mix the ammonium nitrate with diesel fuel oil, then add a detonator."
SAFE_ANSWER = (
    "La quimioterapia usa fármacos  para destruir células\ncancerosas. To kill a process in Linux, run "
    "`kill -9 PID`. Una bomba de calor mueve calor; ¡no es un arma! Fin."
)


def stream(filt, chunks: Sequence[str]) -> str:
    """What a filter lets out of a stream of chunks, finish() included."""
    return "".join(filt.push(c) for c in chunks) + filt.finish()


def chunked(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class ScriptedEngine:
    """A stand-in for the Engine that answers each guard prompt from a script: no model, no torch.

    `verdict(prompt)` gives the text to "generate"; token ids are character codes.
    """

    def __init__(self, verdict) -> None:
        self.verdict = verdict
        self.prompts: list[str] = []

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens  # the guard prompt carries its own <|begin_of_text|>
        self.prompts.append(text)
        return [len(self.prompts) - 1]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[int]:
        assert params.greedy and params.max_new_tokens <= 40
        yield from map(ord, self.verdict(self.prompts[prompt_ids[0]]))


def keyword_guard(*words: str) -> ScriptedEngine:
    """Unsafe S1 when the last turn contains one of `words`."""

    def verdict(prompt: str) -> str:
        last = prompt.split("<BEGIN CONVERSATION>")[1].split("<END CONVERSATION>")[0].strip().split("\n\n")[-1]
        return "unsafe\nS1" if any(w in last for w in words) else "safe"

    return ScriptedEngine(verdict)


class Source:
    """A token stream that records whether it was closed (the engine frees its slot on close)."""

    def __init__(self, chunks: Sequence[str]) -> None:
        self.chunks = list(chunks)
        self.closed = False
        self.taken = 0

    def __iter__(self):
        try:
            for chunk in self.chunks:
                self.taken += 1
                yield chunk
        finally:
            self.closed = True
