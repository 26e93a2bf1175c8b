"""The fast path on a CUDA GPU at falcon-rw-1b's full size: the CPU checks again, plus the CUDA-graph steps.

Skipped without a GPU (CI has none). Run on a GPU machine with `.venv/bin/python -m pytest tests/gpu`.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from llmserve.engine.falcon import FalconRWStatic
from llmserve.engine.model import Engine
from llmserve.engine.scheduler import batch_sizes
from llmserve.tools.tiny import build_tokenizer, falcon_rw_1b_config
from tests.helpers.engine import joining, params

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LENGTHS = [24, 40, 16]


@pytest.fixture(scope="module")
def model():
    """falcon-rw-1b's architecture, random weights spread wide enough that greedy choices are not near-ties."""
    from transformers import FalconForCausalLM

    torch.manual_seed(0)
    config = falcon_rw_1b_config(initializer_range=0.1, eos_token_id=0)
    return FalconForCausalLM(config).to("cuda", torch.float32).eval()


def prompts(n: int) -> list[list[int]]:
    """110, 260 and 410 tokens: the first request's span grows from 128 to 256 while it runs."""
    return [[(37 * i + 11 * k) % 50000 + 1 for k in range(110 + 150 * i)] for i in range(n)]


def reference(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt], device="cuda")
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


def requests() -> list[tuple[list[int], int]]:
    """Three requests of different lengths, the second and third joining a batch already under way."""
    return list(zip(prompts(3), LENGTHS, strict=True))


def test_fast_path_float32_equals_transformers_solo_and_batched(model, closing):
    engine = closing(Engine(model, build_tokenizer(), slots=4, compile="off"))
    assert engine.backend_name == "FalconRWStatic"
    assert not torch.backends.cuda.cudnn_sdp_enabled()  # it rebuilds per shape with an ALiBi bias
    expected = [reference(model, p, n) for p, n in zip(prompts(3), LENGTHS, strict=True)]
    solo = [
        list(engine.generate(p, params(max_new_tokens=n, min_new_tokens=n)))
        for p, n in zip(prompts(3), LENGTHS, strict=True)
    ]
    assert solo == expected
    assert joining(engine, requests()) == expected


@pytest.fixture(scope="module")
def eager_tokens(model):
    eager = Engine(model, build_tokenizer(), slots=4, compile="off")
    try:
        return joining(eager, requests())
    finally:
        eager.close()


def test_compiled_step_matches_the_eager_step(model, eager_tokens, closing):
    """CUDA graphs for every (batch size, span), captured at warm-up, give the eager path's greedy tokens."""
    compiled = closing(Engine(model, build_tokenizer(), slots=4, compile="on"))
    assert compiled.backend.compiled
    compiled.warm_up()
    graphs = counters["stats"]["unique_graphs"]
    assert joining(compiled, requests()) == eager_tokens
    assert counters["stats"]["unique_graphs"] == graphs, "serving compiled a shape that warm-up missed"


def test_captured_step_matches_the_eager_step(model, eager_tokens, closing):
    """COMPILE=cudagraphs: the uncompiled step in a CUDA graph per (batch size, span), all captured at warm-up."""
    captured = closing(Engine(model, build_tokenizer(), slots=4, compile="cudagraphs"))
    backend = captured.backend
    assert backend.step == "cudagraphs"
    # Without warm-up, each shape is captured while serving: a capture must leave the running rows as they were.
    assert joining(captured, requests()) == eager_tokens
    captured.warm_up()
    graphs = len(backend._decode)
    assert graphs == 3 * len(backend.spans())  # batch sizes 1, 2 and 4
    assert joining(captured, requests()) == eager_tokens
    assert len(backend._decode) == graphs, "serving captured a shape that warm-up missed"


def test_captured_step_equals_the_eager_step_in_bf16_at_8_rows(model):
    """What serves by default on a GPU: bf16 (whose attention may take another sdpa kernel than float32), 8 rows.

    The same step, captured and not, over the same weights and the same prefilled slots, one span at a time.
    """
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    eager = FalconRWStatic(bf16, slots=8, max_length=2048, step="eager")
    captured = FalconRWStatic(bf16, slots=8, max_length=2048, step="cudagraphs")
    captured.warm_up(batch_sizes(8))
    for backend in (eager, captured):
        for slot, prompt in enumerate(prompts(8)):  # 110 to 1160 tokens
            backend.prefill([(slot, prompt[:200] if slot % 2 else prompt)])
    generator = torch.Generator(device="cuda").manual_seed(0)
    for rows, span in ((1, 256), (2, 256), (8, 2048), (4, 1024), (8, 2048)):
        tokens = torch.randint(1, 50000, (rows,), device="cuda", generator=generator)
        with torch.inference_mode():
            expected = eager._decode_step(tokens, rows, span)
            got = captured._decode(tokens, rows, span)
        error = float((got - expected).norm() / expected.norm())
        assert error < 1e-2, f"rows {rows}, span {span}: relative error {error:.2e}"
        assert torch.equal(captured.positions, eager.positions)
