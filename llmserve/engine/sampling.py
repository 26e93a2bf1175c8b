"""Batched next-token choice with per-row sampling settings, as tensors the GPU keeps between steps.

Random numbers come from a hash of (seed, step, token id), so a request's samples depend only on its own seed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..request.params import SamplingParams
from . import grammar

_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1  # spreads consecutive token ids across the hash's input space


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (Thomas Mueller's) on int64 tensors holding values below 2**32."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Uniform (0, 1) floats of shape (rows, vocab), a pure function of each row's seed and step."""
    ids = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    row_key = _hash32((seeds ^ _hash32(steps & _MASK32)) & _MASK32)[:, None]
    bits = _hash32((row_key + ids[None, :] * _GOLDEN) & _MASK32)
    # 23 bits: (x + 0.5) / 2**23 is exact in float32, so the largest is 1 - 2**-24, never 1 (24 bits rounded to 1.0,
    # whose log(-log) is -inf: a cut token's -inf score then became NaN, and argmax drew it).
    return ((bits >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


class SlotSampler:
    """Per-slot sampling state and the vectorized choice of the next token for the first `rows` slots."""

    def __init__(
        self,
        slots: int,
        vocab_size: int,
        eos_token_ids: Iterable[int],
        device: torch.device,
        grammars: grammar.Grammars | None = None,
    ) -> None:
        """`grammars` compiles the json_schema of requests that have one (their rows are masked to it)."""
        self.vocab_size = vocab_size
        self.device = device

        def zeros(dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(slots, dtype=dtype, device=device)

        self.temperature = zeros(torch.float32)
        self.top_k = zeros(torch.int64)
        self.top_p = zeros(torch.float32)
        self.penalty = zeros(torch.float32)
        self.min_new_tokens = zeros(torch.int64)
        self.seed = zeros(torch.int64)
        self.step = zeros(torch.int64)  # tokens generated so far by the slot's request
        self.seen = torch.zeros(slots, vocab_size, dtype=torch.bool, device=device)  # for the repetition penalty
        self.eos = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        self.eos[[i for i in eos_token_ids if 0 <= i < vocab_size]] = True
        self.greedy = torch.ones(slots, dtype=torch.bool, device=device)
        self._greedy = [True] * slots  # a CPU copy: whether any row needs the sampling kernels at all
        self.grammars = grammars
        self._matchers: list[object | None] = [None] * slots  # llguidance's, for a slot whose request has a schema

    def assign(self, slot: int, params: SamplingParams, prompt_ids: Sequence[int]) -> None:
        """Load a request's settings into a slot; its prompt's tokens count for the repetition penalty."""
        self._greedy[slot] = params.greedy
        self.greedy[slot] = params.greedy
        self.temperature[slot] = params.temperature if not params.greedy else 1.0
        self.top_k[slot] = params.top_k if params.top_k > 0 else self.vocab_size
        self.top_p[slot] = params.top_p
        self.penalty[slot] = params.repetition_penalty
        # A schema decides where its answer ends: EOS is allowed exactly when the JSON is complete.
        self.min_new_tokens[slot] = 0 if params.json_schema else params.min_new_tokens
        self.seed[slot] = params.seed
        self.step[slot] = 0
        self.seen[slot] = False
        self.seen[slot, torch.tensor(list(prompt_ids), dtype=torch.int64, device=self.device)] = True
        self._matchers[slot] = None
        if params.json_schema:
            if self.grammars is None:
                raise RuntimeError("this engine has no grammar compiler for json_schema")
            self._matchers[slot] = self.grammars.matcher(params.json_schema)

    def release(self, slot: int) -> None:
        """The slot's request is over: its grammar no longer applies to the row."""
        self._matchers[slot] = None

    def sample(self, logits: torch.Tensor, rows: slice) -> torch.Tensor:
        """Choose one token per slot in `rows` from float32 logits (len(rows), vocab); advance those slots."""
        penalty = self.penalty[rows, None]
        # transformers' RepetitionPenaltyLogitsProcessor: shrink the logits of tokens already seen.
        scores = torch.where(self.seen[rows], torch.where(logits < 0, logits * penalty, logits / penalty), logits)
        # MinNewTokensLengthLogitsProcessor: no EOS before min_new_tokens.
        too_early = (self.step[rows] < self.min_new_tokens[rows])[:, None] & self.eos[None, :]
        scores = scores.masked_fill(too_early, float("-inf"))
        matchers = [(i, m) for i, m in enumerate(self._matchers[rows]) if m is not None]
        if matchers:  # before temperature, top-k and top-p, as vLLM applies its structured-output masks
            scores = grammar.mask_scores(scores, matchers, self.eos)
        tokens = scores.argmax(dim=-1) if all(self._greedy[rows]) else self._sample_rows(scores, rows)
        if matchers:
            grammar.advance(matchers, tokens)
        index = torch.arange(rows.start, rows.stop, device=self.device)
        self.seen[index, tokens] = True
        self.step[rows] += 1
        return tokens

    def kept_tokens(self, scores: torch.Tensor, rows: slice) -> torch.Tensor:
        """Which tokens each row in `rows` may draw from after temperature, top-k and top-p: (len(rows), vocab)."""
        ordered, order = self._filtered(scores, rows)
        return torch.zeros_like(scores, dtype=torch.bool).scatter(1, order, ordered > float("-inf"))

    def _filtered(self, scores: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Temperature, top-k, then top-p, as transformers' warpers do it: the scores in ascending order with -inf
        where cut, and that order."""
        scaled = scores / self.temperature[rows, None]
        # TopKLogitsWarper: keep every token at least as likely as the k-th, its ties included.
        descending = scaled.sort(dim=-1, descending=True).values
        kth = descending.gather(1, (self.top_k[rows, None] - 1).clamp(0, self.vocab_size - 1))
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        # TopPLogitsWarper: cut the least likely tokens whose mass stays within 1 - top_p; the most likely stays.
        # Rows at top_p=1 skip it, as generate() adds no warper then (a float32 running sum can reach 1.0 early).
        ascending, order = scaled.sort(dim=-1)
        cut = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - self.top_p[rows, None]
        cut[:, -1] = False
        cut &= (self.top_p[rows] < 1)[:, None]
        return ascending.masked_fill(cut, float("-inf")), order

    def _sample_rows(self, scores: torch.Tensor, rows: slice) -> torch.Tensor:
        """Gumbel-max over the filtered scores draws the token; greedy rows take the argmax."""
        greedy_tokens = scores.argmax(dim=-1)
        ordered, order = self._filtered(scores, rows)
        noise = uniform_noise(self.seed[rows], self.step[rows], self.vocab_size).gather(1, order)
        choice = (ordered - torch.log(-torch.log(noise))).argmax(dim=-1, keepdim=True)
        sampled = order.gather(1, choice).squeeze(1)
        return torch.where(self.greedy[rows], greedy_tokens, sampled)
