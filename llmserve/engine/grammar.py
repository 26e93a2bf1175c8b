"""JSON schemas compiled with llguidance for the engine's tokenizer, and the token masks that hold a slot to one.

Why llguidance, and what a constrained answer does at its end: docs/structured-output.md.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..errors import ErrorCode, InputError

logger = logging.getLogger(__name__)

# No free whitespace: a small model left to choose it can write newlines until max_new_tokens. The separators are
# json.dumps' own, which models have seen most.
JSON_OPTIONS = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
_CACHED = 64  # compiled schemas kept; a server usually sees a few schemas many times
_DOCS = "https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md"


class Grammars:
    """The tokenizer as llguidance sees it (built once, about 0.5 s), compiled schemas, and a matcher per request."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: Iterable[int]) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos = sorted(eos_token_ids)
        self._lock = threading.Lock()
        self._tokenizer = None
        self._unavailable: InputError | None = None
        self._compiled: OrderedDict[str, object] = OrderedDict()  # schema -> its matcher before any token

    def tokenizer(self):
        """llguidance's view of the model's vocabulary: every token's bytes, its EOS tokens, the lm_head's width."""
        with self._lock:
            if self._tokenizer is None and self._unavailable is None:
                import llguidance.hf

                try:
                    self._tokenizer = llguidance.hf.from_tokenizer(
                        self._hf_tokenizer, n_vocab=self.vocab_size, eos_token=self._eos
                    )
                except Exception as e:  # noqa: BLE001 - any tokenizer it cannot read: free text still works
                    self._unavailable = InputError(
                        ErrorCode.BadJsonSchema,
                        "json_schema",
                        f"cannot be applied to this model: its tokenizer is not one llguidance reads ({e}).",
                        "Leave json_schema empty, or serve a model with a fast (tokenizer.json) tokenizer.",
                    )
            if self._unavailable is not None:  # said once, at setup; each json_schema request is refused with it
                raise self._unavailable
            return self._tokenizer

    def compile(self, schema: str):
        """A pristine matcher for a JSON schema (canonical text), cached; InputError naming json_schema if it has none.

        Called where the request is prepared, so that the decode thread only copies it (0.01-0.3 ms, not 1-12 ms)."""
        from llguidance import LLMatcher

        with self._lock:
            if schema in self._compiled:
                self._compiled.move_to_end(schema)
                return self._compiled[schema]
        tokenizer = self.tokenizer()
        try:
            grammar = LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
            pristine = LLMatcher(tokenizer, grammar, log_level=0)
            reason = pristine.get_error() if pristine.is_error() else ""
        except (ValueError, TypeError) as e:
            reason = str(e)
        if reason:
            fix = f"Use the JSON Schema keywords llguidance supports ({_DOCS}), or leave json_schema empty."
            raise InputError(ErrorCode.BadJsonSchema, "json_schema", f"cannot be compiled: {reason.strip()}.", fix)
        with self._lock:
            self._compiled[schema] = pristine
            while len(self._compiled) > _CACHED:
                self._compiled.popitem(last=False)
        return pristine

    def matcher(self, schema: str):
        """A fresh matcher for one answer, at the start of its schema: a copy of the cached one."""
        return self.compile(schema).deep_copy()


def mask_scores(scores: torch.Tensor, matchers: Sequence[tuple[int, object]], eos: torch.Tensor) -> torch.Tensor:
    """-inf on every token the matcher of each (row, matcher) forbids next; a broken matcher allows only EOS."""
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

    vocab = scores.shape[-1]
    bitmask = allocate_token_bitmask(len(matchers), vocab)
    for i, (_, matcher) in enumerate(matchers):
        fill_next_token_bitmask(matcher, bitmask, i)
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, :vocab].astype(bool)
    allowed = torch.from_numpy(allowed).to(scores.device)
    broken = torch.tensor([matcher.is_error() for _, matcher in matchers], device=scores.device)
    allowed = torch.where(broken[:, None], eos[None, :], allowed)
    rows = torch.tensor([row for row, _ in matchers], device=scores.device)
    masked = scores.clone()
    masked[rows] = scores[rows].masked_fill(~allowed, float("-inf"))
    return masked


def advance(matchers: Sequence[tuple[int, object]], tokens: torch.Tensor) -> None:
    """Each matcher consumes the token chosen for its row (a GPU step's tokens are read back here)."""
    chosen = tokens[[row for row, _ in matchers]].tolist()
    for (row, matcher), token in zip(matchers, chosen, strict=True):
        if not matcher.is_error() and not matcher.consume_token(token):
            logger.warning("row %d: the grammar refused token %d: %s", row, token, matcher.get_error())
