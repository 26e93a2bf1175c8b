"""The trained classifier backend: a small model's probability per category against a threshold. No torch here.

The model is llmserve.engine.textclassifier's; scripts/train_moderation trains it on data/moderation/requests.jsonl.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Protocol

from .pipeline import PassThroughFilter
from .policy import Decision

SAFE = "safe"
_CACHE_SIZE = 256


class Scorer(Protocol):
    """Probabilities over `labels` ("safe" and Llama Guard codes) for each text."""

    labels: tuple[str, ...]

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]: ...


class ClassifierModerator:
    """Refuses a question when the classifier's probability that it is unsafe exceeds `threshold`.

    The category is the most probable unsafe label. Answers pass unchecked: the rules and Llama Guard judge them.
    """

    # It was trained on requests only. On answers it is out of its training distribution: an ordinary sentence
    # about chemotherapy scored 0.98 unsafe (S9), so using it on the output would stop ordinary answers.

    name = "classifier"

    def __init__(self, scorer: Scorer, threshold: float, *, model_name: str = "") -> None:
        if SAFE not in scorer.labels:
            raise ValueError(f"the classifier's labels {scorer.labels} have no {SAFE!r}")
        self.scorer = scorer
        self.threshold = threshold
        self.model_name = model_name
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def score(self, text: str) -> tuple[float, str]:
        """(probability that `text` is unsafe, the most probable unsafe category); inputs repeat, so cached."""
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        probs = dict(zip(self.scorer.labels, self.scorer.probabilities([text])[0], strict=True))
        unsafe = {label: p for label, p in probs.items() if label != SAFE}
        result = (1.0 - probs[SAFE], max(unsafe, key=unsafe.__getitem__))
        with self._lock:
            self._cache[text] = result
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        """Each field alone, in order; the first refused one decides."""
        start = time.perf_counter()
        for name, text in texts.items():
            p_unsafe, category = self.score(text)
            if p_unsafe > self.threshold:
                seconds = time.perf_counter() - start
                return Decision(False, (category,), self.name, seconds, field=name, detail=f"p_unsafe={p_unsafe:.2f}")
        return Decision(True, (), self.name, time.perf_counter() - start)

    def output_filter(self, user_text: str = "") -> PassThroughFilter:
        return PassThroughFilter()
