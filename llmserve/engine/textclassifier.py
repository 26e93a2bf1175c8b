"""The trained classifier's model: a small base model's hidden states, mean-pooled at a few layers, and a linear head.

Shipped as llmserve/moderation/classifier/: card.json (labels, layers, threshold) and head.safetensors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import PROJECT_ROOT
from . import threads

logger = logging.getLogger(__name__)

SHIPPED = PROJECT_ROOT / "llmserve" / "moderation" / "classifier"
CARD = "card.json"
HEAD = "head.safetensors"
MAX_TOKENS = 128  # a request of a sentence or two is 10-60 tokens; an answer's checked tail is about 100


@dataclass(frozen=True)
class Card:
    """What a trained classifier is: read from card.json, written by scripts/train_moderation."""

    labels: tuple[str, ...]
    layers: tuple[int, ...]  # hidden_states indices (0 = the embeddings) whose token means are the features
    threshold: float
    base: str = "embedded"  # a model of llmserve/serving/embedded.py's PACKAGED: "embedded" or "gemma-3-270m"
    trained_on: str = ""  # the corpus and its sha256
    notes: str = ""

    @classmethod
    def read(cls, directory: Path) -> Card:
        data = json.loads((directory / CARD).read_text(encoding="utf-8"))
        return cls(**{**data, "labels": tuple(data["labels"]), "layers": tuple(data["layers"])})

    def write(self, directory: Path) -> None:
        data = {**asdict(self), "labels": list(self.labels), "layers": list(self.layers)}
        (directory / CARD).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class Features:
    """Texts to the mean of the base model's hidden states over their tokens (not BOS), at `layers`, side by side."""

    def __init__(self, base_path: Path, layers: Sequence[int]) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(base_path)
        self.tokenizer.padding_side = "right"  # a causal model: padding after a text leaves its states unchanged
        body = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).model.eval()
        # hidden_states[i] is the input of layer i; the last one is normed instead, so keep one layer past the deepest.
        keep = max(layers) + 1
        body.layers = body.layers[:keep]
        body.config.num_hidden_layers = keep
        self.body = body
        self.layers = tuple(layers)

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt",
            return_special_tokens_mask=True,
        )  # fmt: skip
        special = enc.pop("special_tokens_mask")  # a BOS token's state is the same for every text: left out
        states = self.body(**enc, output_hidden_states=True).hidden_states
        mask = (enc["attention_mask"] * (1 - special)).unsqueeze(-1).float()
        count = mask.sum(1).clamp(min=1)  # an empty text: zeros, not NaN
        return torch.cat([(states[i] * mask).sum(1) / count for i in self.layers], dim=-1)


class TorchScorer:
    """The Scorer of llmserve.moderation.classifier: features, then softmax(W x + b)."""

    def __init__(self, features: Features, weight: torch.Tensor, bias: torch.Tensor, labels: Sequence[str]) -> None:
        self.features = features
        self.weight = weight.float()
        self.bias = bias.float()
        self.labels = tuple(labels)

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        threads.share()  # one CPU thread beside an engine's decode thread, not a second pool (engine/threads.py)
        return torch.softmax(self.features(texts) @ self.weight.t() + self.bias, dim=-1).tolist()


def save_classifier(directory: Path, card: Card, weight: torch.Tensor, bias: torch.Tensor) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight.float().contiguous(), "bias": bias.float().contiguous()}, directory / HEAD)
    (directory / HEAD).chmod(0o644)  # save_file writes 0600; an image may run as another user
    card.write(directory)


def load_scorer(directory: Path, card: Card, base_path: Path) -> TorchScorer:
    """The scorer of the classifier in `directory`, whose card the caller has read."""
    head = load_file(directory / HEAD)
    logger.info("moderation classifier: %s's layers %s, labels %s", base_path.name, card.layers, ",".join(card.labels))
    return TorchScorer(Features(base_path, card.layers), head["weight"], head["bias"], card.labels)
