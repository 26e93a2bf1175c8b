"""The fast path for Falcon-RW (ALiBi): a static KV cache in fixed slots, sdpa with the ALiBi bias built for it.

transformers 5.23 cannot give this model a static cache, continuous batching or flash-attention (FACTS.md),
so this module runs the same Hugging Face modules (and so the same weights) with its own attention, in the
style of gpt-fast: the cache is allocated once, every decode step has the same shapes for a given number of
rows, and on CUDA that step is replayed as a CUDA graph: captured as it is, uncompiled (COMPILE=cudagraphs, what
auto picks on CUDA), which needs no compiler and starts in seconds, or compiled by torch.compile first (COMPILE=on).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .scheduler import bucket

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

    def __init__(self, model, *, slots: int, max_length: int, step: str = "eager") -> None:
        if step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, not {step!r}")
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
        self.register_buffer("layer_index", torch.arange(layers, device=self.device), persistent=False)
        self.min_value = torch.finfo(self.dtype).min
        self._lengths = [0] * slots  # positions[] as known on the CPU, without a device sync
        # On CPU, matrix-vector products read bf16 weights about 1.3x faster than one-row matrix products
        # (docs/benchmarks.md). float32 keeps one kernel for every batch size, so answers stay bit-identical.
        self._gemv = self.device.type == "cpu" and self.dtype != torch.float32 and step == "eager"
        self.step = step
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
        """Both graph modes replay one CUDA graph per (row count, span) every step: no per-token kernel launches
        from Python. The scheduler rounds the row count up to a power of two, span() the span to a multiple of 128."""
        return self.step != "eager"

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
        rows, so a step reads only the positions in use, rounded up to a multiple of 128. In the graph modes that
        makes 16 spans at 2048 positions, a graph for each per batch size (96 at 32 slots); spans rounded up to
        powers of two would make 5, but read up to twice the positions in use: 1024 for a batch of 512-token
        prompts growing to 768 positions, instead of 640 and then 768.
        """
        return min(self.max_length, -(-longest // _SPAN_STEP) * _SPAN_STEP)

    def spans(self) -> list[int]:
        """Every span a step can see, smallest first."""
        return sorted({self.span(longest) for longest in range(1, self.max_length + 1)})

    def release(self, slot: int) -> None:
        """Forget the slot's length so that it no longer widens the span; the next prefill overwrites the rest."""
        self._lengths[slot] = 0
        self.positions[slot] = 0

    def warm_up(self) -> None:
        """Compile or capture the decode step for every (batch size, span) the scheduler uses, before serving.

        Runs while no request holds a slot: the steps write only into positions a later prefill overwrites. Call it
        through Scheduler.warm_up(), on the thread that will replay the graphs (torch.compile keeps them per thread).
        """
        if not self.graphed:
            return
        sizes = sorted({bucket(rows, self.slots) for rows in range(1, self.slots + 1)})
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


class CapturedSteps:
    """A decode step captured as it is, uncompiled, in one CUDA graph per (rows, span); replayed every step.

    What torch.compile's reduce-overhead mode does, without the compiler: the step's kernels (cuBLAS, sdpa, the
    elementwise ones unfused) are recorded once and then launched as one graph. The tokens are copied into a
    static input first; the logits come back in a static output that the next replay overwrites, so a caller reads
    them before any graph is replayed again (the scheduler samples at once, on the same stream). Every graph draws
    its scratch memory from one pool, as vLLM does: a replay may overwrite what another graph returned last, which
    is why the logits must be read first, and it is safe in any replay order because no graph reads another's
    output (pytorch/pytorch#166975).
    """

    def __init__(self, step, *, slots: int, device: torch.device, restore: Sequence[torch.Tensor] = ()) -> None:
        """`restore`: what the step updates in place that a capture must leave as it found it (the positions)."""
        self._step = step
        self._restore = tuple(restore)
        self._tokens = torch.zeros(slots, dtype=torch.int64, device=device)
        # One side stream for every capture and its warm-up runs: cuBLAS keeps a workspace per stream it runs on.
        self._side = torch.cuda.Stream(device)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, shape: tuple[int, int]) -> bool:
        return shape in self._graphs

    @torch.inference_mode()
    def capture(self, rows: int, span: int) -> None:
        tokens = self._tokens[:rows]
        saved = [t.clone() for t in self._restore]
        try:
            # A few runs outside the graph first, on a side stream as PyTorch asks: cuBLAS and sdpa pick and set up
            # their kernels, and the allocator has seen the step's memory, before anything is recorded.
            self._side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._side):
                for _ in range(2):
                    self._step(tokens, rows, span)
            torch.cuda.current_stream().wait_stream(self._side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA work (a moderation model, say) does not break the capture.
            with torch.cuda.graph(graph, pool=self._pool, stream=self._side, capture_error_mode="thread_local"):
                logits = self._step(tokens, rows, span)
            self._pool = graph.pool()
            self._graphs[rows, span] = (graph, logits)
        finally:  # also when a capture fails mid-serving: the running rows keep their places
            for tensor, value in zip(self._restore, saved, strict=True):
                tensor.copy_(value)

    def __call__(self, tokens: torch.Tensor, rows: int, span: int) -> torch.Tensor:
        if (rows, span) not in self._graphs:
            logger.warning("capturing the decode step for %d rows and span %d while serving (no warm_up)", rows, span)
            self.capture(rows, span)
        graph, logits = self._graphs[rows, span]
        self._tokens[:rows].copy_(tokens)
        graph.replay()
        return logits
