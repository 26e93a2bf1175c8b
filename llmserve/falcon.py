"""The fast path for Falcon-RW (ALiBi): a static KV cache in fixed slots, sdpa with the ALiBi bias built for it.

transformers 5.23 cannot give this model a static cache, continuous batching or flash-attention (FACTS.md),
so this module runs the same Hugging Face modules (and so the same weights) with its own attention, in the
style of gpt-fast: the cache is allocated once, every decode step has the same shapes for a given number of
rows, and on CUDA that step is compiled and replayed as a CUDA graph.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .scheduler import bucket

_SPAN_STEP = 128  # decode attends over the used cache positions, rounded up to a multiple of this

logger = logging.getLogger(__name__)


def supports(config) -> bool:
    """Falcon-RW's layout: ALiBi, one layer norm before attention and one before the MLP, full multi-head."""
    return (
        getattr(config, "model_type", None) == "falcon"
        and bool(config.alibi)
        and not config.new_decoder_architecture
        and not config.multi_query
        and not config.parallel_attn
    )


def alibi_bias(num_heads: int, length: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """ALiBi's per-head bias for key positions 0..length-1, shape (1, heads, 1, length), scaled for sdpa.

    Rounded exactly as transformers' build_alibi_tensor does (slope times position in bfloat16, then the
    model's dtype, then divided by sqrt(head_dim) by the caller's scale), so the logits match the reference.
    """
    closest = 2 ** math.floor(math.log2(num_heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != num_heads:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        extra = min(closest, num_heads - closest)
        slopes = torch.cat([slopes, torch.pow(extra_base, torch.arange(1, 1 + 2 * extra, 2, dtype=torch.int32))])
    positions = torch.arange(length, dtype=torch.int64)[None, :]
    bias = (slopes[:, None].bfloat16() * positions).to(dtype)
    return bias[None, :, None, :].to(device)


class FalconRWStatic(torch.nn.Module):
    """Falcon-RW decoding in `slots` fixed rows of a preallocated KV cache of `max_length` positions each.

    A Module so that torch.compile sees the cache as buffers: fixed addresses a CUDA graph can replay on.
    """

    def __init__(self, model, *, slots: int, max_length: int, compile: bool = False) -> None:
        super().__init__()
        config = model.config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.model = model
        self.slots = slots
        self.max_length = max_length
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.vocab_size = model.lm_head.out_features
        layers = config.num_hidden_layers
        # One position more than a step ever reads: a span never equals the buffers' length, a case that a
        # compiled step would otherwise need a graph of its own for.
        cache_length = max_length + 1
        shape = (layers, slots, self.num_heads, cache_length, self.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=self.dtype, device=self.device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=self.dtype, device=self.device), persistent=False)
        # The next write index of each slot.
        self.register_buffer("positions", torch.zeros(slots, dtype=torch.int64, device=self.device), persistent=False)
        scale = math.sqrt(self.head_dim)
        alibi = alibi_bias(self.num_heads, cache_length, dtype=self.dtype, device=self.device) / scale
        self.register_buffer("alibi", alibi, persistent=False)
        self.register_buffer("key_index", torch.arange(cache_length, device=self.device), persistent=False)
        self.min_value = torch.finfo(self.dtype).min
        self._lengths = [0] * slots  # positions[] as known on the CPU, without a device sync
        # On CPU, matrix-vector products read bf16 weights about 1.3x faster than one-row matrix products
        # (docs/benchmarks.md). float32 keeps one kernel for every batch size, so answers stay bit-identical.
        self._gemv = self.device.type == "cpu" and self.dtype != torch.float32 and not compile
        self.compiled = compile
        self._decode = self._decode_step
        if compile:
            # One CUDA graph per (row count, span), replayed every step: no per-token kernel launches from Python.
            # Row count and span are symbolic from the start, so the compiler traces the step twice (one row, and
            # many), not once per shape; a CUDA graph is still captured per (rows, span) in warm_up().
            self._decode = torch.compile(self._decode_step, mode="reduce-overhead", fullgraph=True, dynamic=True)

    @torch.inference_mode()
    def prefill(self, slot: int, prompt_ids: Sequence[int]) -> torch.Tensor:
        """Run the prompt into `slot`'s cache; return the float32 logits for the first new token."""
        length = len(prompt_ids)
        ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=self.device)
        causal = self.key_index[None, :length] > self.key_index[:length, None]  # (q, k): True above the diagonal
        mask = self.alibi[..., :length].masked_fill(causal, self.min_value)  # (1, heads, q, k)
        x = self.model.transformer.word_embeddings(ids)
        for i, layer in enumerate(self.model.transformer.h):
            q, k, v = self._qkv(layer, layer.input_layernorm(x))
            self.k_cache[i, slot, :, :length] = k[0]
            self.v_cache[i, slot, :, :length] = v[0]
            x = self._finish_layer(layer, x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        self.positions[slot] = length
        self._lengths[slot] = length
        return self._logits(x[:, -1]).squeeze(0)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        """One token for each of the first `rows` slots: (rows,) ids in, (rows, vocab) float32 logits out."""
        span = self.span(max(self._lengths[:rows]) + 1)
        for row in range(rows):
            self._lengths[row] = min(self._lengths[row] + 1, self.max_length - 1)
        return self._decode(tokens, rows, span)

    def span(self, longest: int) -> int:
        """How many cache positions a step attends over when the longest row holds `longest` of them.

        Reading the whole cache every step would cost as much as reading the weights a few times over at 32
        rows, so a step reads only the positions in use, rounded up: to a multiple of 128 when eager, to a
        power-of-two multiple of 128 when compiled, so that few shapes (CUDA graphs) are ever captured.
        """
        steps = -(-longest // _SPAN_STEP)
        if self.compiled:
            steps = bucket(steps, self.max_length)
        return min(self.max_length, steps * _SPAN_STEP)

    def spans(self) -> list[int]:
        """Every span a step can see, smallest first."""
        return sorted({self.span(longest) for longest in range(1, self.max_length + 1)})

    def release(self, slot: int) -> None:
        """Forget the slot's length so that it no longer widens the span; the next prefill overwrites the rest."""
        self._lengths[slot] = 0
        self.positions[slot] = 0

    def warm_up(self) -> None:
        """Compile and capture the decode step for every (batch size, span) the scheduler uses, before serving.

        Runs while no request holds a slot: the steps write only into positions a later prefill overwrites.
        """
        if not self.compiled:
            return
        sizes = sorted({bucket(rows, self.slots) for rows in range(1, self.slots + 1)})
        spans = self.spans()
        tokens = torch.zeros(self.slots, dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            for rows in sizes:
                for span in spans:
                    for _ in range(3):  # reduce-overhead records the CUDA graph on a later call than the first
                        self._decode(tokens[:rows], rows, span)
        self.positions.zero_()
        self._lengths = [0] * self.slots
        logger.info("compiled the decode step for batch sizes %s and spans %s", sizes, spans)

    def _decode_step(self, tokens: torch.Tensor, rows: int, span: int) -> torch.Tensor:
        pos = self.positions[:rows]
        slot_index = torch.arange(rows, device=self.device)
        valid = self.key_index[None, :span] <= pos[:, None]  # (rows, span)
        mask = self.alibi[..., :span].masked_fill(~valid[:, None, None, :], self.min_value)  # (rows, heads, 1, span)
        x = self.model.transformer.word_embeddings(tokens[:, None])
        for i, layer in enumerate(self.model.transformer.h):
            q, k, v = self._qkv(layer, layer.input_layernorm(x))
            self.k_cache[i][slot_index, :, pos] = k[:, :, 0]
            self.v_cache[i][slot_index, :, pos] = v[:, :, 0]
            keys, values = self.k_cache[i, :rows, :, :span], self.v_cache[i, :rows, :, :span]
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._finish_layer(layer, x, attn)
        # Rows without a request still step; keep their index inside the cache.
        self.positions[:rows] = torch.clamp(pos + 1, max=self.max_length - 1)
        return self._logits(x[:, -1])

    def _linear(self, module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self._gemv and x.numel() == module.in_features:
            flat = x.reshape(-1)
            if module.bias is None:
                out = torch.mv(module.weight, flat)
            else:
                out = torch.addmv(module.bias, module.weight, flat)
            return out.view(*x.shape[:-1], -1)
        return module(x)

    def _qkv(self, layer, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused projection -> three (batch, heads, seq, head_dim) tensors, split as transformers does."""
        batch, length, _ = h.shape
        fused = self._linear(layer.self_attention.query_key_value, h)
        fused = fused.view(batch, length, self.num_heads, 3, self.head_dim)
        return tuple(fused[..., j, :].transpose(1, 2) for j in range(3))

    def _finish_layer(self, layer, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = attn.shape
        attn = attn.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        x = x + self._linear(layer.self_attention.dense, attn)
        mlp = layer.mlp
        h = self._linear(mlp.dense_h_to_4h, layer.post_attention_layernorm(x))
        return x + self._linear(mlp.dense_4h_to_h, mlp.act(h))

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._linear(self.model.lm_head, self.model.transformer.ln_f(hidden)).float()
