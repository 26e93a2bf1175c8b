"""The fast path for Falcon-RW (ALiBi): a static KV cache in fixed slots, sdpa with the ALiBi bias built for it.

On CUDA the decode step is replayed as a CUDA graph (cudagraphs.py), captured uncompiled or after torch.compile.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from . import steptiming
from .cudagraphs import CapturedSteps

# transformers 5.23 gives this architecture no static cache, no continuous batching and no flash-attention (ALiBi),
# so this module runs the model's own Hugging Face modules, and so its weights, with its own attention, in the
# style of gpt-fast: the cache is allocated once, and every decode step has the same shapes for a given row count.

_SPAN_STEP = 128  # decode attends over the used cache positions, rounded up to a multiple of this
# How the decode step runs: as written, compiled by torch.compile (with CUDA graphs on CUDA), or captured as written
# into CUDA graphs.
STEPS = ("eager", "compiled", "cudagraphs")

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
    """ALiBi's per-head bias for key positions 0..length-1, shape (1, heads, 1, length), before sdpa's scale."""
    # Rounded exactly as transformers' build_alibi_tensor does (slope times position in bfloat16, then the model's
    # dtype, then divided by sqrt(head_dim) by the caller's scale), so that the logits match the reference.
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

    chunked_prefill = True
    batched_prefill = False

    def __init__(self, model, *, slots: int, max_length: int, step: str = "eager", prefill_model=None) -> None:
        """`prefill_model`: the same model in another dtype, for prompts (their keys are stored in the model's)."""
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, not {step!r}")
        super().__init__()
        config = model.config
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.model = model
        self.prefill_model = prefill_model or model
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
        self.register_buffer("layer_index", torch.arange(layers, device=self.device), persistent=False)
        self.min_value = torch.finfo(self.dtype).min
        self._lengths = [0] * slots  # positions[] as known on the CPU, without a device sync
        # On CPU, matrix-vector products read bf16 weights about 1.3x faster than one-row matrix products
        # (docs/benchmarks.md). float32 keeps one kernel for every batch size, so answers stay bit-identical.
        self._gemv = self.device.type == "cpu" and self.dtype != torch.float32 and step == "eager"
        self.step = step
        self._aten_rows: set[int] = set()  # batch sizes whose CPU step runs ATen's kernels, not oneDNN's (warm_up)
        self._decode = self._decode_step
        if step == "compiled":
            # Row count and span are symbolic from the start, so the compiler traces the step three times (one row,
            # all the slots, the rest), not once per shape; a CUDA graph is still captured per (rows, span) in
            # warm_up(), more than inductor's default of 8 per compiled graph before it warns.
            import torch._inductor.config as inductor

            inductor.triton.cudagraph_dynamic_shape_warn_limit = None
            self._decode = torch.compile(self._decode_step, mode="reduce-overhead", fullgraph=True, dynamic=True)
        elif step == "cudagraphs":
            if self.device.type != "cuda":
                raise ValueError("CUDA graphs need the model on a CUDA device")
            self._decode = CapturedSteps(self._decode_step, slots=slots, device=self.device, restore=[self.positions])

    @property
    def compiled(self) -> bool:
        return self.step == "compiled"

    @property
    def graphed(self) -> bool:
        """Whether each step replays one CUDA graph per (row count, span): no per-token kernel launches from Python."""
        return self.step != "eager"

    @torch.inference_mode()
    def prefill(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        """Run each (slot, next prompt ids) after what its slot holds; return each one's last float32 logits."""
        return torch.cat([self._prefill(slot, ids) for slot, ids in chunks])

    def _prefill(self, slot: int, prompt_ids: Sequence[int]) -> torch.Tensor:
        start = self._lengths[slot]
        end = start + len(prompt_ids)
        ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=self.device)
        model = self.prefill_model
        dtype = model.lm_head.weight.dtype
        # (q, k): True where key k comes after query q's position (start + q).
        causal = self.key_index[None, :end] > self.key_index[start:end, None]
        mask = self.alibi[..., :end].to(dtype).masked_fill(causal, torch.finfo(dtype).min)  # (1, heads, q, k)
        x = model.transformer.word_embeddings(ids)
        for i, layer in enumerate(model.transformer.h):
            q, k, v = self._qkv(layer, layer.input_layernorm(x))
            self.k_cache[i, slot, :, start:end] = k[0]
            self.v_cache[i, slot, :, start:end] = v[0]
            keys, values = self.k_cache[i, slot : slot + 1, :, :end], self.v_cache[i, slot : slot + 1, :, :end]
            if dtype != self.dtype:  # a prefill model in another dtype: earlier chunks as stored, this one as made
                keys = torch.cat([keys[:, :, :start].to(dtype), k], dim=2)
                values = torch.cat([values[:, :, :start].to(dtype), v], dim=2)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._finish_layer(layer, x, attn)
        self.positions[slot] = end
        self._lengths[slot] = end
        return self._logits(x[:, -1], model)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, live: Sequence[bool]) -> torch.Tensor:
        """One token for each live row of the first len(live) slots: (rows, vocab) float32 logits."""
        # The other rows still step (padding to a power of two, or a prompt still in prefill): they keep their length,
        # so they never widen the span, and what they write lies past it, where their next prefill or step writes.
        rows = len(live)
        span = self.span(max(self._lengths[:rows]) + 1)
        for row, on in enumerate(live):
            if on:
                self._lengths[row] = min(self._lengths[row] + 1, self.max_length - 1)
        with steptiming.onednn(rows not in self._aten_rows):
            return self._decode(tokens, rows, span)

    def span(self, longest: int) -> int:
        """How many cache positions a step attends over when the longest row holds `longest`: a multiple of 128."""
        # Reading the whole cache every step would cost as much as reading the weights a few times over at 32 rows.
        # Multiples of 128 make 16 spans (a graph each per batch size) at 2048 positions; powers of two would make
        # 5 but read up to twice the positions in use (docs/engine.md).
        return min(self.max_length, -(-longest // _SPAN_STEP) * _SPAN_STEP)

    def spans(self) -> list[int]:
        """Every span a step can see, smallest first."""
        return sorted({self.span(longest) for longest in range(1, self.max_length + 1)})

    def release(self, slot: int) -> None:
        """Forget the slot's length so that it no longer widens the span; the next prefill overwrites the rest."""
        self._lengths[slot] = 0
        self.positions[slot] = 0

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Compile or capture the decode step for every (batch size, span), through Scheduler.warm_up, before serving;
        on a CPU in bf16, time each size's step with oneDNN's kernels and ATen's, and keep the faster."""
        # Runs while no request holds a slot: the steps write only into positions a later prefill overwrites.
        if self.step == "eager" and steptiming.has_kernel_choice(self.device, self.dtype):
            self._time_kernels(batch_sizes)
        if not self.graphed:
            return
        sizes = sorted(batch_sizes)
        spans = self.spans()
        tokens = torch.zeros(self.slots, dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            # Largest first: a captured graph's scratch memory is shared with the smaller ones captured after it.
            for rows in reversed(sizes):
                for span in reversed(spans):
                    if self.compiled:
                        for _ in range(3):  # reduce-overhead records the CUDA graph on a later call than the first
                            self._decode(tokens[:rows], rows, span)
                    elif (rows, span) not in self._decode:
                        self._decode.capture(rows, span)
        self.positions.zero_()
        self._lengths = [0] * self.slots
        logger.info("decode step (%s) ready for batch sizes %s and spans %s", self.step, sizes, spans)

    @torch.inference_mode()
    def _time_kernels(self, batch_sizes: Sequence[int]) -> None:
        def run(onednn: bool, tokens: torch.Tensor) -> None:
            with steptiming.onednn(onednn):
                self._decode(tokens, len(tokens), self.span(max(self._lengths[: len(tokens)]) + 1))

        chosen = steptiming.choose(self, batch_sizes, {"oneDNN": True, "ATen": False}, run, self.vocab_size)
        self._aten_rows = {rows for rows, onednn in chosen.items() if not onednn}

    def _decode_step(self, tokens: torch.Tensor, rows: int, span: int) -> torch.Tensor:
        pos = self.positions[:rows]
        slot_index = torch.arange(rows, device=self.device)
        valid = self.key_index[None, :span] <= pos[:, None]  # (rows, span)
        mask = self.alibi[..., :span].masked_fill(~valid[:, None, None, :], self.min_value)  # (rows, heads, 1, span)
        x = self.model.transformer.word_embeddings(tokens[:, None])
        for i, layer in enumerate(self.model.transformer.h):
            q, k, v = self._qkv(layer, layer.input_layernorm(x))
            # The layer as a tensor index, so the write is one index_put_ into the cache: through an int index
            # (a view), torch.compile would rebuild the layer's whole cache out of place and copy it back each step.
            at = (self.layer_index[i : i + 1], slot_index, slice(None), pos)
            self.k_cache[at] = k[:, :, 0]
            self.v_cache[at] = v[:, :, 0]
            keys, values = self.k_cache[i, :rows, :, :span], self.v_cache[i, :rows, :, :span]
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = self._finish_layer(layer, x, attn)
        # Rows without a request still step; keep their index inside the cache.
        self.positions[:rows] = torch.clamp(pos + 1, max=self.max_length - 1)
        return self._logits(x[:, -1])

    def _linear(self, module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        if self._gemv and x.numel() == module.in_features:
            flat = x.reshape(-1)
            out = torch.mv(module.weight, flat)
            if module.bias is not None:  # not addmv: in bf16 on an AVX2-only CPU it took 7x mv's time (docs/engine.md)
                out = out + module.bias
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

    def _logits(self, hidden: torch.Tensor, model=None) -> torch.Tensor:
        model = model or self.model
        return self._linear(model.lm_head, model.transformer.ln_f(hidden)).float()
