"""The batched path on the decoder-only architectures transformers ships: each one is picked, and gives generate()'s
greedy tokens alone, joining a batch under way, and with prompts prefilled in chunks and left-padded together.

Models whose layers the batched path does not build (recurrent, hybrid) fall back to a forward per request, and
verify() turns away a model that ignores the positions or the mask it is given.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from llmserve.engine.batched import BatchedSlots, Unsupported
from llmserve.engine.generic import TransformersSlots
from llmserve.engine.model import Engine
from llmserve.engine.scheduler import Scheduler
from llmserve.errors import SetupError
from tests.helpers.engine import Recorder, finished, joining, params, reference_greedy

WINDOW = 8  # every sliding-window layer's: the prompts below are 20-30 tokens, so it hides most of each one

# Prompt texts (30, 20 and 23 tokens with the tiny tokenizer) and how many tokens each generates.
TEXTS = [
    "Machine learning models learn patterns from data. Emoji and symbols: 😀 🚀 € ñ ü é — “quotes”. Pregunta: ¿Qué es?",
    "The quick brown fox jumps over the lazy dog, and the dog sleeps.",
    "Pregunta: ¿Cuál es la capital de España?\nRespuesta: Madrid. ¿Y la de Francia?",
]
LENGTHS = [16, 12, 14]

# Architectures with sliding-window layers: Qwen2 and Gemma mix them with full ones, Mistral and Phi3 slide everywhere.
SLIDING = ["qwen2", "mistral", "gemma2", "gemma3", "phi3"]
BATCHED = [*SLIDING, "gpt2", "gpt_neox", "falcon"]
FALLBACK = ["jamba", "mamba"]  # recurrent layers (Jamba's mixed with attention): not built by the batched path


def _configs(vocab_size: int, eos: int) -> dict[str, Callable[[], tuple[type, object]]]:
    """Each architecture's (model class, config): 2 layers of width 64, wide random weights so greedy output varies."""
    import transformers as tf

    ids = dict(vocab_size=vocab_size, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, initializer_range=1.0)
    llama = dict(
        ids,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    # Gemma scales its embeddings by sqrt(width): with them tied to the output, a random Gemma repeats its last token.
    gemma = dict(llama, head_dim=16, query_pre_attn_scalar=16, tie_word_embeddings=False, sliding_window=WINDOW)
    mixed = ["sliding_attention", "full_attention"]
    return {
        # use_sliding_window with max_window_layers=1: Qwen2Config makes layer_types [full, sliding].
        "qwen2": lambda: (
            tf.Qwen2ForCausalLM,
            tf.Qwen2Config(**llama, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
        ),
        "mistral": lambda: (tf.MistralForCausalLM, tf.MistralConfig(**llama, sliding_window=WINDOW)),
        # Gemma2 runs eager attention (additive masks) for its attention-logit softcapping; Gemma3 runs sdpa.
        "gemma2": lambda: (tf.Gemma2ForCausalLM, tf.Gemma2Config(**gemma, layer_types=mixed)),
        "gemma3": lambda: (
            tf.Gemma3ForCausalLM,
            tf.Gemma3TextConfig(**gemma, layer_types=mixed, final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
        ),
        "phi3": lambda: (tf.Phi3ForCausalLM, tf.Phi3Config(**llama, sliding_window=WINDOW)),
        "gpt2": lambda: (tf.GPT2LMHeadModel, tf.GPT2Config(**ids, n_embd=64, n_layer=2, n_head=4, n_positions=256)),
        "gpt_neox": lambda: (
            tf.GPTNeoXForCausalLM,
            tf.GPTNeoXConfig(
                **ids,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=256,
            ),
        ),
        # Falcon-7B/40B's layout (rotary, grouped K/V heads), not Falcon-RW's ALiBi fast path.
        "falcon": lambda: (
            tf.FalconForCausalLM,
            tf.FalconConfig(
                **ids,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_kv_heads=2,
                new_decoder_architecture=True,
                alibi=False,
                max_position_embeddings=256,
            ),
        ),
        "jamba": lambda: (
            tf.JambaForCausalLM,
            tf.JambaConfig(
                **llama, attn_layer_period=2, attn_layer_offset=1, mamba_d_state=8, mamba_expand=2, num_experts=1
            ),
        ),
        "mamba": lambda: (
            tf.MambaForCausalLM,
            tf.MambaConfig(**ids, hidden_size=64, num_hidden_layers=2, state_size=8),
        ),
    }


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every architecture above as a tiny random model saved with the tiny tokenizer, built offline."""
    from llmserve.tools.tiny import _save, build_tokenizer

    tokenizer = build_tokenizer()
    dirs = {}
    for name, build in _configs(len(tokenizer), tokenizer.eos_token_id).items():
        model_class, config = build()
        dirs[name] = _save(model_class, config, tokenizer, tmp_path_factory.mktemp(name), seed=4)
    return dirs


@pytest.fixture(scope="module", params=BATCHED)
def model(request, model_dirs):
    """(name, path, engine with 4 slots on the CPU in float32) for each architecture the batched path runs."""
    path = model_dirs[request.param]
    engine = Engine.load(path, device=torch.device("cpu"), dtype=torch.float32, slots=4)
    yield request.param, path, engine
    engine.close()


@functools.cache
def _reference(path: Path, prompt: tuple[int, ...], n: int) -> list[int]:
    return reference_greedy(path, list(prompt), n)


def _prompts(engine: Engine) -> list[list[int]]:
    prompts = [engine.encode(text) for text in TEXTS]
    assert [len(p) for p in prompts] == [30, 20, 23]  # longer than the window, and of different lengths
    return prompts


def _together(backend, eos_token_ids, requests, *, prefill_tokens: int, monkeypatch):
    """Greedy (prompt, n) requests submitted together to a Scheduler with this prefill budget; returns each one's
    tokens and each prefill forward's [(slot, ids)] lengths.

    A request for one token is prefilled first and held there until the others are all submitted, so that they arrive
    in one batch (in order), however fast the decode thread is.
    """
    scheduler = Scheduler(backend, eos_token_ids=eos_token_ids, prefill_tokens=prefill_tokens)
    prefill = backend.prefill
    entered, submitted = threading.Event(), threading.Event()
    calls: list[list[tuple[int, int]]] = []

    def held_prefill(chunks):
        entered.set()
        assert submitted.wait(60)
        calls.append([(slot, len(ids)) for slot, ids in chunks])
        return prefill(chunks)

    monkeypatch.setattr(backend, "prefill", held_prefill)
    try:
        holder, recorders = Recorder(), [Recorder() for _ in requests]
        scheduler.submit([1, 2, 3], params(max_new_tokens=1, min_new_tokens=1), holder)
        assert entered.wait(60)
        for (prompt, n), recorder in zip(requests, recorders, strict=True):
            scheduler.submit(prompt, params(max_new_tokens=n, min_new_tokens=n), recorder)
        submitted.set()
        for r in [holder, *recorders]:
            r.wait(finished)
            assert r.outcome is None
        assert scheduler.active() == 0
    finally:
        scheduler.close()
    return [r.tokens for r in recorders], calls[1:]


@pytest.mark.parametrize("name", SLIDING)
def test_the_prompts_are_long_enough_for_the_sliding_windows_to_matter(model_dirs, name):
    """generate() with the window of 8 and with a window wider than the text give different tokens for every prompt,
    so the batched path's equality below checks its window masks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dirs[name]
    tokenizer = AutoTokenizer.from_pretrained(path)
    wide = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, sliding_window=10_000).eval()
    assert wide.config.sliding_window == 10_000
    for text, n in zip(TEXTS, LENGTHS, strict=True):
        prompt = tokenizer.encode(text)
        with torch.inference_mode():
            out = wide.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        assert out[0, len(prompt) :].tolist() != _reference(path, tuple(prompt), n)


def test_alone_each_architecture_runs_batched_with_generates_greedy_tokens(model):
    name, path, engine = model
    assert isinstance(engine.backend, BatchedSlots), name
    prompt = _prompts(engine)[0]
    expected = _reference(path, tuple(prompt), LENGTHS[0])
    assert len(set(expected)) > 4  # the random model's greedy output varies
    assert list(engine.generate(prompt, params(max_new_tokens=LENGTHS[0], min_new_tokens=LENGTHS[0]))) == expected


def test_requests_of_different_lengths_joining_at_different_steps_get_generates_tokens(model):
    """Each request joins once the one before has 3 tokens: rows at different positions share every decode step."""
    _, path, engine = model
    prompts = _prompts(engine)
    got = joining(engine, list(zip(prompts, LENGTHS, strict=True)))
    assert got == [_reference(path, tuple(p), n) for p, n in zip(prompts, LENGTHS, strict=True)]
    assert engine.scheduler.active() == 0


@pytest.mark.parametrize("prefill_tokens", [8, 64])
def test_prompts_prefilled_together_in_chunks_get_generates_tokens(model, prefill_tokens, monkeypatch):
    """Three prompts (30, 20, 23 tokens) arriving together while nothing decodes, so that the first forward may take
    8 times the budget: with 8, the first two share it (the shorter left-padded), and once they decode the third
    goes in chunks of 8 between their steps; with 64, all three share one forward."""
    _, path, engine = model
    prompts = _prompts(engine)
    # The engine's own scheduler is idle (no request): the backend is this one's alone.
    got, calls = _together(
        engine.backend,
        engine.eos_token_ids,
        list(zip(prompts, LENGTHS, strict=True)),
        prefill_tokens=prefill_tokens,
        monkeypatch=monkeypatch,
    )
    assert got == [_reference(path, tuple(p), n) for p, n in zip(prompts, LENGTHS, strict=True)]
    if prefill_tokens == 8:
        assert calls == [[(0, 30), (1, 20)], [(2, 8)], [(2, 8)], [(2, 7)]]
    else:
        assert calls == [[(0, 30), (1, 20), (2, 23)]]


@pytest.mark.parametrize("name", FALLBACK)
def test_a_model_the_batched_path_does_not_fit_falls_back_to_a_forward_per_request(
    model_dirs, name, caplog, make_engine
):
    """ENGINE=auto: the generic backend, a warning that says why, and still generate()'s greedy tokens."""
    path = model_dirs[name]
    engine = make_engine(path, slots=2)
    assert isinstance(engine.backend, TransformersSlots)
    assert "batched path does not fit" in caplog.text and name in caplog.text
    prompt = _prompts(engine)[1]
    expected = _reference(path, tuple(prompt), 12)
    assert len(set(expected)) > 4
    assert list(engine.generate(prompt, params(max_new_tokens=12, min_new_tokens=12))) == expected


def test_engine_batched_on_a_model_it_does_not_fit_is_a_setup_error_naming_engine(model_dirs):
    with pytest.raises(SetupError) as info:
        Engine.load(model_dirs["mamba"], device=torch.device("cpu"), dtype=torch.float32, kind="batched")
    assert info.value.field == "ENGINE"
    assert "does not fit the batched path" in str(info.value) and "ENGINE=transformers" in str(info.value)


def test_a_model_that_fails_verify_falls_back_and_engine_batched_names_why(
    model_dirs, caplog, make_engine, monkeypatch
):
    """A model whose layers the batched path builds, but whose check fails: ENGINE=auto warns with the reason and
    serves generate()'s tokens a forward per request; ENGINE=batched is a SetupError naming ENGINE, with the reason."""

    def fails(self):
        raise Unsupported("its logits differ from its own forward by 0.5 (relative; limit 0.001)")

    monkeypatch.setattr(BatchedSlots, "verify", fails)
    path = model_dirs["qwen2"]
    engine = make_engine(path, slots=2)
    assert isinstance(engine.backend, TransformersSlots)
    assert "batched path does not fit this qwen2 model (its logits differ from its own forward by 0.5" in caplog.text
    prompt = _prompts(engine)[1]
    assert list(engine.generate(prompt, params(max_new_tokens=12, min_new_tokens=12))) == _reference(
        path, tuple(prompt), 12
    )
    with pytest.raises(SetupError) as info:
        Engine.load(path, device=torch.device("cpu"), dtype=torch.float32, kind="batched")
    assert info.value.field == "ENGINE" and "its logits differ from its own forward by 0.5" in str(info.value)


def test_the_fallback_gives_generates_tokens_for_prompts_prefilled_in_chunks(model_dirs, make_engine, monkeypatch):
    """A hybrid model (Jamba: recurrent and attention layers) on the fallback, under a prefill budget of 8 tokens:
    its recurrent state continues one token at a time only, so each prompt goes in whole, one per forward."""
    path = model_dirs["jamba"]
    engine = make_engine(path, slots=4)
    assert isinstance(engine.backend, TransformersSlots)
    prompts = _prompts(engine)
    got, calls = _together(
        engine.backend,
        engine.eos_token_ids,
        list(zip(prompts, LENGTHS, strict=True)),
        prefill_tokens=8,
        monkeypatch=monkeypatch,
    )
    assert calls == [[(slot, len(p))] for slot, p in enumerate(prompts)]
    assert got == [_reference(path, tuple(p), n) for p, n in zip(prompts, LENGTHS, strict=True)]


@pytest.mark.parametrize("ignored", ["position_ids", "attention_mask"])
def test_verify_turns_away_a_model_that_ignores_its_positions_or_its_mask(model_dirs, ignored, monkeypatch):
    """The same model passes verify(); with a forward that drops what the batched path gives it, it is Unsupported."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dirs["qwen2"], dtype=torch.float32).eval()
    BatchedSlots(model, slots=4, max_length=256).verify()
    forward = model.forward

    def ignoring(*args, **kwargs):
        kwargs[ignored] = None
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", ignoring)
    with pytest.raises(Unsupported, match="logits differ from its own forward"):
        BatchedSlots(model, slots=4, max_length=256).verify()


def test_verify_turns_away_a_model_whose_forward_fails(model_dirs, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dirs["gpt2"], dtype=torch.float32).eval()

    def failing(*args, **kwargs):
        raise TypeError("forward() got an unexpected keyword argument 'position_ids'")

    monkeypatch.setattr(model, "forward", failing)
    with pytest.raises(Unsupported, match="its forward failed here: TypeError"):
        BatchedSlots(model, slots=4, max_length=256).verify()
