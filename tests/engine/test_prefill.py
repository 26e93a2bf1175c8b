"""Prefill: in chunks that let running streams go on, and in float32 beside bf16 weights on CPUs without bf16 matmul."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmserve.engine import device as device_module
from llmserve.engine.batched import BatchedSlots
from llmserve.engine.device import cpu_has_bf16_matmul, pick_prefill_dtype
from llmserve.engine.falcon import FalconRWStatic
from llmserve.engine.generic import TransformersSlots
from llmserve.engine.scheduler import Scheduler
from tests.helpers.engine import Recorder, finished, has_tokens, params, reference_greedy

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_prefills_in_float32_only_on_a_cpu_without_bf16_matmul(native, monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16_matmul", lambda: native)
    expected = None if native else torch.float32
    assert pick_prefill_dtype(CPU, torch.bfloat16, setting="auto") == expected
    # A DTYPE the user chose, float32 weights, or a GPU: one dtype for everything.
    assert pick_prefill_dtype(CPU, torch.bfloat16, setting="bfloat16") is None
    assert pick_prefill_dtype(CPU, torch.float32, setting="auto") is None
    assert pick_prefill_dtype(torch.device("cuda"), torch.bfloat16, setting="auto") is None


def test_bf16_matmul_is_not_native_when_torch_is_held_to_avx2(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 on an AMX machine: the AVX2 kernels run, so the AVX2 choice applies."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not cpu_has_bf16_matmul()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert cpu_has_bf16_matmul()


@pytest.mark.parametrize(("model", "kind", "backend"), [
    ("llama", "auto", BatchedSlots),
    ("llama", "transformers", TransformersSlots),
    ("falcon", "auto", FalconRWStatic),
])  # fmt: skip
def test_a_float32_prefill_beside_bf16_weights_gives_the_float32_models_first_token(
    model, kind, backend, tiny_model_dir, tiny_chat_model_dir, make_engine
):
    """The prompt runs through a float32 copy of the bf16 weights (keys kept in bf16), then decoding runs on the bf16
    weights: the first token is the one a float32 forward of those (bf16-rounded) weights picks."""
    path = tiny_model_dir if model == "falcon" else tiny_chat_model_dir
    engine = make_engine(path, dtype=torch.bfloat16, kind=kind, prefill_dtype=torch.float32)
    assert isinstance(engine.backend, backend) and engine.prefill_dtype == torch.float32
    assert next(engine.backend.prefill_model.parameters()).dtype == torch.float32
    assert next(engine.backend.model.parameters()).dtype == torch.bfloat16
    prompt = engine.encode("Question: What is the capital of France?\nAnswer:")
    tokens = list(engine.generate(prompt, params(max_new_tokens=12, min_new_tokens=12)))
    assert len(tokens) == 12
    rounded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).float().eval()
    with torch.inference_mode():
        assert tokens[0] == int(rounded(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())


def test_no_float32_copy_when_it_does_not_fit_in_memory(tiny_chat_model_dir, make_engine, monkeypatch, caplog):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=1000))
    with caplog.at_level(logging.WARNING):
        engine = make_engine(tiny_chat_model_dir, dtype=torch.bfloat16, prefill_dtype=torch.float32)
    assert engine.prefill_dtype is None and engine.backend.prefill_model is engine.backend.model
    assert "no torch.float32 copy for prefill" in caplog.text


@pytest.mark.parametrize("model", ["llama", "falcon"])
def test_a_long_prompt_prefills_in_chunks_between_the_running_streams_steps(
    model, tiny_model_dir, tiny_chat_model_dir, make_engine, monkeypatch
):
    """With a budget of 8 tokens, a 40-token prompt that arrives while a stream runs takes 5 forwards, and the
    running stream gets a token between each of them; both answers are transformers' greedy ones."""
    path = tiny_model_dir if model == "falcon" else tiny_chat_model_dir
    engine = make_engine(path, slots=2)
    engine.scheduler.close()
    calls: list[str] = []
    backend = engine.backend
    prefill, decode = backend.prefill, backend.decode
    monkeypatch.setattr(backend, "prefill", lambda chunks: calls.append("prefill") or prefill(chunks))
    monkeypatch.setattr(backend, "decode", lambda tokens, live: calls.append("decode") or decode(tokens, live))
    scheduler = Scheduler(backend, eos_token_ids=engine.eos_token_ids, prefill_tokens=8)
    try:
        short = engine.encode("Hola")
        long = engine.encode("Question: What is the capital of France? " * 4)[:40]
        running, joining = Recorder(), Recorder()
        scheduler.submit(short, params(max_new_tokens=30, min_new_tokens=30), running)
        running.wait(has_tokens(2))
        scheduler.submit(long, params(max_new_tokens=6, min_new_tokens=6), joining)
        joining.wait(finished)
        running.wait(finished)
    finally:
        scheduler.close()
    first = calls.index("prefill", 1)  # the short prompt's own prefill is calls[0]
    chunks = calls[first:]
    assert chunks[:10] == ["prefill", "decode"] * 5, chunks[:12]
    assert running.tokens == reference_greedy(path, short, 30)
    assert joining.tokens == reference_greedy(path, long, 6)


def test_prompts_that_arrive_together_share_one_prefill_forward(tiny_chat_model_dir, make_engine, monkeypatch):
    """Three 10-token prompts within a 64-token budget: one forward for all three, and each gets its first token
    from it (before any decode step)."""
    engine = make_engine(tiny_chat_model_dir, slots=4)
    engine.scheduler.close()
    backend = engine.backend
    prefill = backend.prefill
    entered, release = threading.Event(), threading.Event()
    forwards: list[list[int]] = []

    def held(chunks):
        entered.set()
        assert release.wait(60)
        forwards.append([len(ids) for _, ids in chunks])
        return prefill(chunks)

    monkeypatch.setattr(backend, "prefill", held)
    scheduler = Scheduler(backend, eos_token_ids=engine.eos_token_ids, prefill_tokens=64)
    try:
        holder = Recorder()
        scheduler.submit([5, 6, 7], params(max_new_tokens=1, min_new_tokens=1), holder)
        assert entered.wait(60)  # the decode thread is held inside the first prefill
        prompts = [engine.encode(f"Pregunta {i}: ¿qué hora es?")[:10] for i in range(3)]
        recorders = [Recorder() for _ in prompts]
        for prompt, r in zip(prompts, recorders, strict=True):
            scheduler.submit(prompt, params(max_new_tokens=4, min_new_tokens=4), r)
        release.set()
        for r in recorders:
            r.wait(finished)
    finally:
        scheduler.close()
    assert forwards == [[3], [10, 10, 10]]
    for prompt, r in zip(prompts, recorders, strict=True):
        assert r.tokens == reference_greedy(tiny_chat_model_dir, prompt, 4)


def test_the_plan_fills_the_budget_in_arrival_order_padding_counted():
    from llmserve.engine.prefill import IDLE_CHUNKS, plan

    # Streams decoding: 8 tokens. The first prompt sets the width; later rows are cut or padded to it.
    assert plan([30, 20, 23], budget=8, decoding=True, chunked=True) == [8]
    assert plan([3, 20, 2, 9], budget=8, decoding=True, chunked=True) == [3, 3]
    # Nothing decoding: 8 times the budget, so two 30-wide rows fit in 64 and a third does not.
    assert IDLE_CHUNKS == 8
    assert plan([30, 20, 23], budget=8, decoding=False, chunked=True) == [30, 20]
    # A backend that continues no prompt in chunks: one whole prompt, however long.
    assert plan([500, 3], budget=8, decoding=True, chunked=False) == [500]
    assert plan([], budget=8, decoding=True, chunked=True) == []


def test_a_prompt_cancelled_between_its_chunks_leaves_no_empty_prefill(tiny_chat_model_dir, make_engine, monkeypatch):
    """Cancelled after its first chunk: the request ends, and the loop runs no prefill of nothing (nor logs one)."""
    engine = make_engine(tiny_chat_model_dir, slots=2)
    engine.scheduler.close()
    backend = engine.backend
    prefill = backend.prefill
    calls: list[list[int]] = []
    scheduler = Scheduler(backend, eos_token_ids=engine.eos_token_ids, prefill_tokens=8)
    cancelled, submitted = Recorder(), threading.Event()
    prompt = (engine.encode("Question: What is the capital of France? ") * 10)[:100]

    def cancelling(chunks):
        calls.append([len(ids) for _, ids in chunks])
        assert submitted.wait(60)
        scheduler.cancel(job)  # from the decode thread, between this chunk and the next
        return prefill(chunks)

    monkeypatch.setattr(backend, "prefill", cancelling)
    try:
        job = scheduler.submit(prompt, params(max_new_tokens=4, min_new_tokens=4), cancelled)
        submitted.set()
        cancelled.wait(finished)
        after = Recorder()
        monkeypatch.setattr(backend, "prefill", prefill)
        scheduler.submit(engine.encode("Hola"), params(max_new_tokens=3, min_new_tokens=3), after)
        after.wait(finished)
    finally:
        scheduler.close()
    assert calls == [[64]]
    assert cancelled.outcome is None and cancelled.tokens == []
    assert after.outcome is None and len(after.tokens) == 3
