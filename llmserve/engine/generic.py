"""The fallback backend: any causal LM through transformers, one DynamicCache per slot, a forward per row.

For the models that batched.BatchedSlots does not fit (recurrent or hybrid caches, other attention kinds)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache


class TransformersSlots:
    """Every architecture transformers loads, in `slots` slots: concurrent and correct, not batched."""

    def __init__(self, model, *, slots: int, prefill_model=None) -> None:
        """`prefill_model`: the same model in another dtype, for prompts (their caches are then cast to the model's)."""
        self.model = model
        self.prefill_model = prefill_model or model
        self.dtype = next(model.parameters()).dtype
        self.slots = slots
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self._caches: list[DynamicCache | None] = [None] * slots

    @torch.inference_mode()
    def prefill(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        """Run each (slot, next prompt ids) after what its slot's cache holds; return each one's last logits."""
        out = []
        for slot, prompt_ids in chunks:
            if self._caches[slot] is None:
                self._caches[slot] = DynamicCache(config=self.model.config)
            ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=self.device)
            cache = self._caches[slot]
            logits = self.prefill_model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            if self.prefill_model is not self.model:
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys.to(self.dtype), layer.values.to(self.dtype)
            out.append(logits.logits[:, -1].float())
        return torch.cat(out)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, live: Sequence[bool]) -> torch.Tensor:
        logits = torch.zeros(len(live), self.vocab_size, dtype=torch.float32, device=self.device)
        for row, on in enumerate(live):
            if on:
                out = self.model(input_ids=tokens[row].view(1, 1), past_key_values=self._caches[row], use_cache=True)
                logits[row] = out.logits[0, -1].float()
        return logits

    def release(self, slot: int) -> None:
        self._caches[slot] = None

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Nothing to compile on this path."""
