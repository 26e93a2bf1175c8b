"""The decode loop on a tiny model built offline: same tokens as transformers, seeds, EOS, limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from llmserve.engine.device import pick_device_and_dtype
from llmserve.engine.model import Engine
from llmserve.errors import ErrorCode, InputError
from llmserve.request.prompts import render_chat
from tests.helpers.engine import params, reference_greedy


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Iterator[Engine]:
    engine = Engine.load(tiny_model_dir, device=torch.device("cpu"), dtype=torch.float32)
    yield engine
    engine.close()


PROMPTS = ["Question: What is the capital of France?\nAnswer:", "¿Qué es el aprendizaje automático?", "Hola"]


@pytest.mark.parametrize("text", PROMPTS)
def test_greedy_tokens_equal_transformers_generate_falcon(engine, tiny_model_dir, text):
    prompt = engine.encode(text)
    ours = list(engine.generate(prompt, params(max_new_tokens=24, min_new_tokens=24)))
    assert ours == reference_greedy(tiny_model_dir, prompt, 24)


def test_greedy_with_repetition_penalty_equals_transformers(engine, tiny_model_dir):
    prompt = engine.encode(PROMPTS[0])
    ours = list(engine.generate(prompt, params(max_new_tokens=20, min_new_tokens=20, repetition_penalty=1.3)))
    assert ours == reference_greedy(tiny_model_dir, prompt, 20, repetition_penalty=1.3)


def test_generic_architecture_matches_transformers(tiny_chat_model_dir, make_engine):
    engine = make_engine(tiny_chat_model_dir)
    prompt = engine.encode(PROMPTS[1])
    ours = list(engine.generate(prompt, params(max_new_tokens=20, min_new_tokens=20)))
    assert ours == reference_greedy(tiny_chat_model_dir, prompt, 20)
    assert engine.has_chat_template and engine.context_length == 512
    rendered = render_chat(engine.apply_chat_template, [{"role": "user", "content": "Hola"}])
    assert rendered == "<|user|>Hola\n<|assistant|>"


def test_same_seed_same_sample_different_seed_differs(engine):
    prompt = engine.encode(PROMPTS[1])
    sampled = params(temperature=1.0, top_p=0.95, top_k=50, min_new_tokens=24)
    runs = {
        seed: [list(engine.generate(prompt, params(**{**sampled.__dict__, "seed": seed}))) for _ in range(2)]
        for seed in (1, 2)
    }
    assert runs[1][0] == runs[1][1] and runs[2][0] == runs[2][1]
    assert runs[1][0] != runs[2][0]


def test_stops_at_eos_without_yielding_it(engine):
    prompt = engine.encode(PROMPTS[0])
    # Make EOS the only possible next token by forcing its logit through a huge bias.
    eos = next(iter(engine.eos_token_ids))
    bias = torch.zeros(engine.model.config.vocab_size)
    bias[eos] = 1e4
    original = engine.model.lm_head.bias
    engine.model.lm_head.bias = torch.nn.Parameter(bias)
    try:
        assert list(engine.generate(prompt, params(max_new_tokens=10))) == []
        # min_new_tokens keeps EOS away for that many tokens.
        forced = list(engine.generate(prompt, params(max_new_tokens=10, min_new_tokens=3)))
        assert len(forced) == 3 and eos not in forced
    finally:
        engine.model.lm_head.bias = original


def test_max_new_tokens_is_respected(engine):
    out = list(engine.generate(engine.encode("Hola"), params(max_new_tokens=5, min_new_tokens=5)))
    assert len(out) == 5


def test_context_length_and_eos_come_from_the_model(engine, tiny_model_dir):
    assert engine.context_length == 256
    assert engine.eos_token_ids == {engine.tokenizer.eos_token_id}
    assert not engine.has_chat_template


def test_eos_from_the_config_is_trusted_only_if_it_is_a_special_token(tiny_model_dir, make_engine):
    engine = make_engine(tiny_model_dir)
    engine.model.generation_config.eos_token_id = [engine.tokenizer.eos_token_id, 2]  # 2 is an ordinary token
    from llmserve.engine.model import _eos_token_ids

    assert _eos_token_ids(engine.model, engine.tokenizer) == {engine.tokenizer.eos_token_id}


def test_device_and_dtype_are_picked_in_one_place():
    assert pick_device_and_dtype(device="cpu", dtype="auto") == (torch.device("cpu"), torch.bfloat16)
    assert pick_device_and_dtype(device="cpu", dtype="float32") == (torch.device("cpu"), torch.float32)
    if not torch.cuda.is_available():
        assert pick_device_and_dtype()[0] == torch.device("cpu")


def test_bfloat16_default_runs_on_cpu(tiny_model_dir, make_engine):
    engine = make_engine(tiny_model_dir, dtype=torch.bfloat16)
    assert engine.model.dtype == torch.bfloat16
    assert len(list(engine.generate(engine.encode("Hola"), params(max_new_tokens=4, min_new_tokens=4)))) == 4


def test_a_chat_template_that_refuses_the_system_role_gets_it_in_the_first_user_turn(tiny_chat_model_dir, make_engine):
    engine = make_engine(tiny_chat_model_dir)
    engine.tokenizer.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    )
    rendered = render_chat(
        engine.apply_chat_template, [{"role": "system", "content": "Sé breve."}, {"role": "user", "content": "Hola"}]
    )
    assert rendered == "<|user|>Sé breve.\n\nHola\n<|assistant|>"


def test_a_chat_template_error_is_an_input_error(tiny_chat_model_dir, make_engine):
    engine = make_engine(tiny_chat_model_dir)
    engine.tokenizer.chat_template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(InputError) as info:
        render_chat(engine.apply_chat_template, [{"role": "user", "content": "Hola"}])
    assert info.value.code is ErrorCode.BadMessages and "must alternate" in str(info.value)


def test_a_tiny_temperature_decodes_greedily(engine):
    prompt = engine.encode(PROMPTS[0])
    greedy = list(engine.generate(prompt, params(min_new_tokens=24)))
    assert list(engine.generate(prompt, params(min_new_tokens=24, temperature=1e-40))) == greedy


def test_cudnn_attention_is_switched_off_for_cuda():
    """cuDNN's sdpa builds a graph per shape with an ALiBi bias: an Engine on CUDA switches it off (process-wide)."""
    from llmserve.engine.device import keep_cudnn_out_of_attention

    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        keep_cudnn_out_of_attention()
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()  # what takes the bias instead
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
