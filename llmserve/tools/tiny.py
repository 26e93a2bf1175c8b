"""Models built offline: a tiny Falcon-RW and a tiny chat Llama for tests, falcon-rw-1b's shape with random weights."""

from __future__ import annotations

from pathlib import Path

# Enough English and Spanish that the BPE merges cover both; the weights are random anyway.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: What is the capital of France?\nAnswer: Paris.",
    "Pregunta: ¿Cuál es la capital de España?\nRespuesta: Madrid.",
    "¿Qué es el aprendizaje automático? Es una rama de la inteligencia artificial.",
    "El niño comió una manzana en el jardín. Año, señal, corazón, acción.",
    "Machine learning models learn patterns from data.",
    "Emoji and symbols: 😀 🚀 € ñ ü é — “quotes”.",
]

EOS_TOKEN = "<|endoftext|>"


def build_tokenizer(vocab_size: int = 512):
    """Train a GPT-2-style byte-level BPE tokenizer on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, unk_token=EOS_TOKEN)


def make_tiny_model(out_dir: str | Path, *, seed: int = 0, context_length: int = 256) -> Path:
    """Write a randomly initialised Falcon-RW (ALiBi) model and its tokenizer to `out_dir`."""
    from transformers import FalconForCausalLM

    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    config = falcon_rw_1b_config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        # Wide initial weights make a random model's greedy output varied (std 0.02 repeats one token).
        initializer_range=1.0,
        max_position_embeddings=context_length,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return _save(FalconForCausalLM, config, tokenizer, out_dir, seed=seed)


def make_tiny_chat_model(out_dir: str | Path, *, seed: int = 1) -> Path:
    """Write a tiny random Llama whose tokenizer has a chat template (the generic, non-Falcon path) to `out_dir`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        initializer_range=1.0,
    )
    return _save(LlamaForCausalLM, config, tokenizer, out_dir, seed=seed)


def _save(model_class, config, tokenizer, out_dir: str | Path, *, seed: int) -> Path:
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def falcon_rw_1b_config(**overrides):
    """The architecture of tiiuae/falcon-rw-1b (1.31 B parameters, ALiBi); `overrides` shrink it for tests.

    Speed depends on the architecture, not on the weight values, so random weights serve for timing.
    """
    from transformers import FalconConfig

    shape = dict(
        vocab_size=50304,
        hidden_size=2048,
        num_hidden_layers=24,
        num_attention_heads=32,
        max_position_embeddings=2048,
        bos_token_id=50256,
        eos_token_id=50256,
    )
    # What makes it Falcon-RW rather than Falcon-7B/40B: ALiBi, separate K/V heads, sequential blocks, biases.
    variant = dict(alibi=True, new_decoder_architecture=False, multi_query=False, parallel_attn=False, bias=True)
    return FalconConfig(**{**shape, **variant, **overrides})
