"""The sampler keeps the same tokens as transformers' warpers: top-k with its ties, top-p=1 strictly off."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from llmserve.engine.sampling import SlotSampler, uniform_noise
from tests.helpers.engine import params

VOCAB = 64


def transformers_kept(scores: torch.Tensor, *, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The tokens generate() can draw from, with its warpers in its order (each added only when it is on)."""
    warped = TemperatureLogitsWarper(temperature)(None, scores.clone())
    if top_k:
        warped = TopKLogitsWarper(top_k)(None, warped)
    if top_p < 1.0:
        warped = TopPLogitsWarper(top_p)(None, warped)
    return warped > float("-inf")


def kept(scores: torch.Tensor, **settings) -> torch.Tensor:
    sampler = SlotSampler(len(scores), VOCAB, eos_token_ids=[], device=torch.device("cpu"))
    for slot in range(len(scores)):
        sampler.assign(slot, params(**settings), prompt_ids=[])
    return sampler.kept_tokens(scores, slice(0, len(scores)))


def tied_logits(rows: int) -> torch.Tensor:
    """bf16-like logits: few distinct values, so the k-th is often tied with its neighbours."""
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(rows, VOCAB, generator=generator) * 4).round() / 2


def random_logits(rows: int) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(2)) * 3


@pytest.mark.parametrize("logits", [tied_logits, random_logits], ids=["tied", "random"])
@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(0.7, 5, 1.0), (1.0, 1, 1.0), (1.3, 20, 0.9), (0.7, 0, 0.5), (1.0, 50, 0.95), (0.5, 0, 1.0)],
)
def test_kept_tokens_equal_transformers_warpers(logits, temperature, top_k, top_p):
    scores = logits(8)
    expected = transformers_kept(scores, temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.equal(kept(scores, temperature=temperature, top_k=top_k, top_p=top_p), expected)


def test_top_k_keeps_every_token_tied_with_the_kth():
    scores = torch.full((1, VOCAB), -5.0)
    scores[0, :4] = torch.tensor([3.0, 2.0, 2.0, 2.0])
    assert kept(scores, temperature=1.0, top_k=2, top_p=1.0)[0, :5].tolist() == [True, True, True, True, False]


def test_top_p_of_one_keeps_every_token_even_when_the_running_sum_reaches_one_early():
    # One dominant token: in float32 the running sum of the sorted probabilities is 1.0 after it.
    scores = torch.full((1, VOCAB), -60.0)
    scores[0, 0] = 60.0
    assert torch.softmax(scores, dim=-1).cumsum(dim=-1)[0, 0].item() == 1.0
    assert kept(scores, temperature=1.0, top_k=0, top_p=1.0).all()


def test_the_noise_stays_inside_0_1_so_a_cut_token_is_never_drawn():
    """float32 rounds 1 - 2**-25 to 1.0: log(-log(1.0)) is -inf, and a -inf (cut) score then reads as NaN, which
    argmax takes. With a 49,152-token vocabulary that happened in about 1 step in 340; here 2,048 steps are drawn."""
    vocab = 49152
    for start in range(0, 2048, 256):
        steps = torch.arange(start, start + 256)
        noise = uniform_noise(torch.full((256,), 7), steps, vocab)
        assert noise.min() > 0 and noise.max() < 1
        assert not torch.isinf(torch.log(-torch.log(noise))).any()
