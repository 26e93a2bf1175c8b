"""The generic backend: any causal LM through transformers, one DynamicCache per slot, a forward per row."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache


class TransformersSlots:
    """Every architecture transformers loads, in `slots` slots: concurrent and correct, not batched."""

    def __init__(self, model, *, slots: int) -> None:
        self.model = model
        self.slots = slots
        self.device = next(model.parameters()).device
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self._caches: list[DynamicCache | None] = [None] * slots

    @torch.inference_mode()
    def prefill(self, slot: int, prompt_ids: Sequence[int]) -> torch.Tensor:
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([list(prompt_ids)], dtype=torch.int64, device=self.device)
        logits = self.model(input_ids=ids, past_key_values=cache, use_cache=True).logits
        self._caches[slot] = cache
        return logits[0, -1].float()

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        logits = torch.zeros(rows, self.vocab_size, dtype=torch.float32, device=self.device)
        for row, cache in enumerate(self._caches[:rows]):
            if cache is not None:
                out = self.model(input_ids=tokens[row].view(1, 1), past_key_values=cache, use_cache=True).logits
                logits[row] = out[0, -1].float()
        return logits

    def release(self, slot: int) -> None:
        self._caches[slot] = None

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """Nothing to compile on this path."""
