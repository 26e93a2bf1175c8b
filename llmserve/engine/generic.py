"""The fallback backend: any causal LM through transformers, one DynamicCache per slot, a forward per row.

For the models that batched.BatchedSlots does not fit (recurrent or hybrid caches, other attention kinds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache


class TransformersSlots:
    """Every architecture transformers loads, in `slots` slots: concurrent and correct, not batched."""

    # A recurrent layer continues its state one token at a time only (Jamba's, Mamba's): each prompt is prefilled
    # in one forward here, never in chunks.
    chunked_prefill = False
    batched_prefill = False

    def __init__(self, model, *, slots: int, prefill_model=None) -> None:
        """`prefill_model`: the same model in another dtype, for prompts (their caches are then cast to the model's)."""
        self.model = model
        self.prefill_model = prefill_model or model
        self.dtype = next(model.parameters()).dtype
        self.slots = slots
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        # Mamba's models name their state cache_params, as generate() knows them by (transformers 5.23).
        self._cache_name = "cache_params" if "mamba" in type(model).__name__.lower() else "past_key_values"
        self._caches: list[Any] = [None] * slots  # what each slot's forward returned as its cache

    @torch.inference_mode()
    def prefill(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        """Run each (slot, prompt ids) after what its slot's cache holds; return each one's last logits."""
        out = []
        for slot, prompt_ids in chunks:
            ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=self.device)
            logits = self._forward(self.prefill_model, slot, ids, logits_to_keep=1)
            cache = self._caches[slot]
            if self.prefill_model is not self.model and isinstance(cache, DynamicCache):
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys.to(self.dtype), layer.values.to(self.dtype)
            out.append(logits)
        return torch.cat(out)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, live: Sequence[bool]) -> torch.Tensor:
        logits = torch.zeros(len(live), self.vocab_size, dtype=torch.float32, device=self.device)
        for row, on in enumerate(live):
            if on:
                logits[row] = self._forward(self.model, row, tokens[row].view(1, 1))[0]
        return logits

    def _forward(self, model, slot: int, ids: torch.Tensor, **options) -> torch.Tensor:
        """One forward of `ids` after the slot's cache (the model makes one when there is none); the last logits."""
        cache = {self._cache_name: self._caches[slot]} if self._caches[slot] is not None else {}
        out = model(input_ids=ids, use_cache=True, **cache, **options)
        self._caches[slot] = getattr(out, self._cache_name)
        return out.logits[:, -1].float()

    def release(self, slot: int) -> None:
        self._caches[slot] = None

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Nothing to compile on this path."""
