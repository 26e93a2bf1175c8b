"""The batched path for any decoder-only transformers model: every slot's rows in one forward of the model's own code.

Per-slot KV buffers, per-row `position_ids` and a 4-D mask built here; docs/engine.md has the design and its reasons.
"""

# Each slot keeps its keys and values in one buffer per layer, (slots, kv heads, capacity, head dim), that grows as
# the longest request does. A forward runs a block of rows, each at its own positions: the model gets those positions
# as `position_ids` and a 4-D mask built here (a key is seen when it is at or before the query's position, and within
# the window on sliding-window layers), and the cache below writes each row's new keys where its request is, so rows
# of different lengths share a step, and requests join and leave between steps without moving anyone's cache.
# Prefill chunks are left-padded, so that every row's last token is the forward's last position (`logits_to_keep=1`).
# This is text-generation-inference's `CausalLMBatch` without its re-padding on every join, in the layout of the
# Falcon-RW fast path's static cache.

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import steptiming

_GROW = 256  # the cache grows by at least this many positions at a time
_MASKS = ("full_attention", "sliding_attention")  # the layer types whose masks this module builds


class Unsupported(Exception):
    """The model cannot run on this path (its layer types, its attention, or its answers differ): why, in words."""


class _SlotLayer(CacheLayerMixin):
    """One layer of the slot cache, as the model's attention calls it: `update` stores and returns the keys."""

    is_sliding = False

    def __init__(self, owner: BatchedSlots, index: int) -> None:
        super().__init__()
        self._owner, self._index = owner, index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """The buffers are the owner's."""

    def update(self, key_states, value_states, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        return self._owner._store(self._index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._owner._span, 0

    def get_seq_length(self) -> int:
        return self._owner._span

    def get_max_length(self) -> int:
        return -1


class BatchedSlots:
    """Any causal LM whose attention layers go through transformers' Cache API, decoding `slots` rows in one forward.

    `verify()` (run by pick_backend) raises Unsupported for a model it does not fit: it then runs a forward per request.
    """

    chunked_prefill = True
    batched_prefill = True

    def __init__(self, model, *, slots: int, max_length: int, prefill_model=None) -> None:
        """`prefill_model`: the same model in another dtype, for prompts (its keys are stored in the model's)."""
        config = model.config
        layer_types = getattr(config, "layer_types", None)
        unknown = sorted(set(layer_types or ()) - set(_MASKS))
        if unknown:
            raise Unsupported(f"its layer types {unknown} (only {list(_MASKS)} are built here)")
        attention = getattr(config, "_attn_implementation", "eager") or "eager"
        if attention not in ("sdpa", "eager"):
            raise Unsupported(f"attn_implementation={attention!r} (4-D masks need 'sdpa' or 'eager')")
        param = next(model.parameters())
        self.model = model
        self.prefill_model = prefill_model or model
        self.slots = slots
        self.max_length = max_length
        self.device, self.dtype = param.device, param.dtype
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        # Models with layer types take a mask per type; the others one mask for every layer.
        self._mask_types = sorted(set(layer_types)) if layer_types else None
        windowed = "sliding_attention" in self._mask_types if layer_types else _uses_window(config)
        self._window = config.sliding_window if windowed else None
        self._additive = attention == "eager"  # eager attention adds the mask; sdpa takes it as booleans
        layers = config.get_text_config().num_hidden_layers
        self._cache = Cache(layers=[_SlotLayer(self, i) for i in range(layers)])
        self._keys: list[torch.Tensor | None] = [None] * layers
        self._values: list[torch.Tensor | None] = [None] * layers
        self._capacity = 0  # positions per slot in the buffers; the last one is where padding writes
        self._lengths = [0] * slots  # tokens each slot's request has in the cache
        # The forward being run: which slots, where each token goes, how many positions are read.
        self._rows: torch.Tensor | None = None  # None: the first n slots, read as a view
        self._where: torch.Tensor | None = None
        self._span = 0
        # How a decode step of n rows runs, from warm_up's timings: which model (this one, or the prefill copy) and
        # whether with oneDNN. Sizes not in it: this model, with oneDNN (torch's default).
        self._ways: dict[int, tuple[object, bool]] = {}

    # The Backend protocol (scheduler.Backend) ---------------------------------------------

    @torch.inference_mode()
    def prefill(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        """Run each (slot, next prompt ids) after what its slot holds, in one forward; the last token's logits each."""
        width = max(len(ids) for _, ids in chunks)
        starts = [self._lengths[slot] for slot, _ in chunks]
        tokens = torch.zeros(len(chunks), width, dtype=torch.int64)
        positions = torch.full((len(chunks), width), -1, dtype=torch.int64)  # -1: padding
        for row, ((slot, ids), start) in enumerate(zip(chunks, starts, strict=True)):
            n = len(ids)
            tokens[row, width - n :] = torch.tensor(list(ids), dtype=torch.int64)
            positions[row, width - n :] = torch.arange(start, start + n)
            self._lengths[slot] = start + n
        slots = [slot for slot, _ in chunks]
        rows = None if slots == list(range(len(slots))) else torch.tensor(slots, device=self.device)
        return self._forward(self.prefill_model, tokens, positions, rows)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, live: Sequence[bool]) -> torch.Tensor:
        """One token for each live row of the first len(live) slots: (rows, vocab) float32 logits (others: padding)."""
        model, onednn = self._ways.get(len(live), (self.model, True))
        return self._decode(model, onednn, tokens, live)

    def _decode(self, model, onednn: bool, tokens: torch.Tensor, live: Sequence[bool]) -> torch.Tensor:
        positions = torch.tensor([[self._lengths[row] if on else -1] for row, on in enumerate(live)])
        for row, on in enumerate(live):
            if on:
                self._lengths[row] += 1
        with steptiming.onednn(onednn):
            return self._forward(model, tokens[: len(live), None], positions, None)

    def release(self, slot: int) -> None:
        self._lengths[slot] = 0

    @torch.inference_mode()
    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """On a CPU, time a decode step of each batch size in each way it can run, and keep the fastest: oneDNN's
        bf16 kernels or ATen's, the weights or their float32 prefill copy (docs/engine.md: "Decode steps by size")."""
        ways = {"oneDNN": (self.model, True)}
        if steptiming.has_kernel_choice(self.device, self.dtype):
            ways["ATen"] = (self.model, False)
        if self.prefill_model is not self.model:
            ways["float32 copy"] = (self.prefill_model, True)
        if self.device.type != "cpu" or len(ways) == 1:
            return
        vocab = min(self.vocab_size, getattr(self.model.config, "vocab_size", self.vocab_size))
        self._ways = steptiming.choose(
            self, batch_sizes, ways, lambda way, tokens: self._decode(*way, tokens, [True] * len(tokens)), vocab
        )

    # Checking that the model fits ------------------------------------------------------------

    @torch.inference_mode()
    def verify(self) -> None:
        """Prefill in two chunks and decode two steps beside a padding row; compare with the model's plain forward.

        Raises Unsupported when the logits differ beyond rounding (a model that ignores position_ids or 4-D masks).
        """
        slot = self.slots - 1
        vocab = min(self.vocab_size, getattr(self.model.config, "vocab_size", self.vocab_size))
        ids = [(37 * i + 11) % vocab for i in range(9)]
        try:
            ours = [self.prefill([(slot, ids[:4])]), self.prefill([(slot, ids[4:7])])]
            for token in ids[7:]:
                tokens = torch.full((self.slots,), token, dtype=torch.int64, device=self.device)
                ours.append(self.decode(tokens, [row == slot for row in range(self.slots)])[slot : slot + 1])
            plain = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False).logits[0].float()
        except Exception as e:  # noqa: BLE001 - any failure means: not this path
            raise Unsupported(f"its forward failed here: {type(e).__name__}: {e}") from e
        finally:
            self.release(slot)
        expected = plain[[3, 6, 7, 8]]
        got = torch.cat([row.reshape(1, -1) for row in ours])
        tolerance = 1e-3 if self.dtype == torch.float32 else 6e-2
        error = (got - expected).abs().max().item() / max(expected.abs().max().item(), 1e-6)
        if not error <= tolerance:
            raise Unsupported(f"its logits differ from its own forward by {error:.2g} (relative; limit {tolerance})")

    # One forward ------------------------------------------------------------------------------

    def _forward(self, model, tokens: torch.Tensor, positions: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """tokens and positions (n, q) on the CPU, -1 for padding; rows: the slots (None: the first n)."""
        longest = int(positions.max()) + 1
        self._reserve(longest + 1)  # and one for padding's writes
        self._span = longest
        padding = positions < 0
        where = positions.masked_fill(padding, self._capacity - 1)
        self._rows = rows
        self._where = where.to(self.device)
        mask = self._mask(positions, next(model.parameters()).dtype)
        out = model(
            input_ids=tokens.to(self.device),
            position_ids=positions.clamp(min=0).to(self.device),
            attention_mask=mask,
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float().to(self.device)

    def _mask(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | dict[str, torch.Tensor]:
        """(n, 1, q, span): a key is seen when at or before the query's position (padding sees key 0 only)."""
        keys = torch.arange(self._span)[None, None, :]
        query = positions[:, :, None]
        seen = (keys <= query) | ((query < 0) & (keys == 0))
        masks = {"full_attention": seen}
        if self._window is not None:
            masks["sliding_attention"] = seen & ((keys > query - self._window) | (query < 0))
        out = {}
        for kind, mask in masks.items():
            mask = mask[:, None].to(self.device)
            if self._additive:
                blocked = torch.finfo(dtype).min
                mask = torch.zeros(mask.shape, dtype=dtype, device=self.device).masked_fill(~mask, blocked)
            out[kind] = mask
        if self._mask_types is None:
            return out["sliding_attention" if self._window is not None else "full_attention"]
        return {kind: out[kind] for kind in self._mask_types}

    def _store(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (n, heads, q, dim) keys and values where each row's tokens go; return what the rows attend over."""
        if self._keys[layer] is None:
            shape = (self.slots, keys.shape[1], self._capacity, keys.shape[3])
            self._keys[layer] = torch.zeros(shape, dtype=self.dtype, device=keys.device)
            self._values[layer] = torch.zeros(shape, dtype=self.dtype, device=values.device)
        k_buffer, v_buffer = self._keys[layer], self._values[layer]
        n = keys.shape[0]
        # A model spread over GPUs (accelerate) has each layer's cache on that layer's GPU.
        rows = torch.arange(n, device=keys.device) if self._rows is None else self._rows.to(keys.device)
        where = self._where.to(keys.device)
        at = (rows[:, None], slice(None), where)
        k_buffer[at] = keys.transpose(1, 2).to(k_buffer.dtype)
        v_buffer[at] = values.transpose(1, 2).to(v_buffer.dtype)
        span = self._span
        if self._rows is None:
            seen = k_buffer[:n, :, :span], v_buffer[:n, :, :span]
        else:
            seen = k_buffer[:, :, :span].index_select(0, rows), v_buffer[:, :, :span].index_select(0, rows)
        if keys.dtype == k_buffer.dtype:
            return seen
        # A prefill model in another dtype reads the earlier chunks as stored, and this chunk's keys as it made them.
        k_seen, v_seen = seen[0].to(keys.dtype), seen[1].to(values.dtype)
        real = where < span  # padding writes past the span
        at = (torch.arange(n, device=keys.device)[:, None].expand_as(real)[real], slice(None), where[real])
        k_seen[at] = keys.transpose(1, 2)[real]
        v_seen[at] = values.transpose(1, 2)[real]
        return k_seen, v_seen

    def _reserve(self, positions: int) -> None:
        """Grow every layer's buffers to hold `positions` per slot (copying what they hold)."""
        if positions <= self._capacity:
            return
        capacity = max(positions, min(2 * self._capacity, self.max_length + 1), self._capacity + _GROW)
        for buffers in (self._keys, self._values):
            for i, old in enumerate(buffers):
                if old is not None:
                    new = old.new_zeros((*old.shape[:2], capacity, old.shape[3]))
                    new[:, :, : self._capacity - 1] = old[:, :, : self._capacity - 1]
                    buffers[i] = new
        self._capacity = capacity


def _uses_window(config) -> bool:
    """A config without layer types whose sliding window applies to every layer (Mistral's, when it is set)."""
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True) is not False
