"""The engine on the embedded model equals transformers' generate() token for token (float32), alone and batched."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmserve.engine.model import Engine
from tests.helpers.engine import joining, params

QUESTIONS = ["What is the capital of France?", "¿Cuál es la capital de Francia?", "Name a fruit that is yellow."]
N = 16


@pytest.fixture(scope="module")
def engine(embedded_dir):
    engine = Engine.load(embedded_dir, device=torch.device("cpu"), dtype=torch.float32, slots=4)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def expected(embedded_dir, engine) -> list[tuple[list[int], list[int]]]:
    """(chat prompt, transformers' greedy tokens) for each question."""
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32).eval()
    cases = []
    for question in QUESTIONS:
        prompt = engine.encode(engine.apply_chat_template([{"role": "user", "content": question}]),
                               add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=N, min_new_tokens=N, do_sample=False)
        cases.append((prompt, out[0, len(prompt):].tolist()))
    return cases


def test_greedy_tokens_alone_equal_generate(engine, expected):
    for prompt, reference in expected:
        assert list(engine.generate(prompt, params(max_new_tokens=N, min_new_tokens=N))) == reference


def test_greedy_tokens_in_a_batch_that_requests_join_equal_generate(engine, expected):
    tokens = joining(engine, [(prompt, N) for prompt, _ in expected])
    assert tokens == [reference for _, reference in expected]
