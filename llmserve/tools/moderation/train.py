"""scripts/train_moderation: the classifier's head fitted on the dev requests; its threshold from cross-validation.

Logistic regression (scikit-learn) on llmserve.engine.textclassifier's features; the held-out parts are never read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ...config import PROJECT_ROOT, Settings
from ...engine.textclassifier import SHIPPED, Card, Features, save_classifier
from ...moderation.classifier import SAFE

DEV = PROJECT_ROOT / "data" / "moderation" / "requests.jsonl"
# hidden_states indices per base model (llmserve/serving/embedded.py PACKAGED): middle and deep layers of each
LAYERS = {"gemma-3-270m": (4, 6, 8, 10, 12, 14, 16, 17), "embedded": (8, 12, 16, 20, 24, 29)}
FOLDS = 5


def fit(features: np.ndarray, labels: np.ndarray, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed)).fit(
        features, labels
    )


def out_of_fold(features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> np.ndarray:
    """Each request's probability of being unsafe from a head fitted without it (stratified folds)."""
    from sklearn.model_selection import StratifiedKFold

    p_unsafe = np.zeros(len(labels))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(features, labels):
        model = fit(features[train], labels[train], c, seed)
        p_unsafe[test] = 1.0 - model.predict_proba(features[test])[:, list(model.classes_).index(SAFE)]
    return p_unsafe


def pick_threshold(p_unsafe: np.ndarray, unsafe: np.ndarray, max_fp: float) -> float:
    """The lowest threshold at which at most `max_fp` of the safe requests score above it."""
    safe_scores = np.sort(p_unsafe[~unsafe])[::-1]
    return float(safe_scores[min(int(max_fp * len(safe_scores)), len(safe_scores) - 1)])


def folded_head(model) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaler and the regression as one linear layer: W (x - mean) / scale + b = (W / scale) x + b'."""
    scaler, regression = model.steps[0][1], model.steps[1][1]
    weight = regression.coef_ / scaler.scale_
    bias = regression.intercept_ - weight @ scaler.mean_
    return torch.from_numpy(weight), torch.from_numpy(bias)


def main(argv: list[str]) -> int:
    """Fit the moderation classifier on the dev requests and write it (default: over the shipped one)."""
    parser = argparse.ArgumentParser(prog="scripts/train_moderation", description=main.__doc__)
    parser.add_argument("--corpus", type=Path, default=DEV)
    parser.add_argument("--base", choices=sorted(LAYERS), default="gemma-3-270m", help="whose states are read")
    parser.add_argument("--out", type=Path, default=SHIPPED, metavar="DIR")
    parser.add_argument("--c", type=float, default=0.01, help="inverse regularisation strength (default 0.01)")
    parser.add_argument("--max-fp", type=float, default=0.01, help="false positives allowed in cross-validation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from ...serving.embedded import PACKAGED, build_embedded

    data = args.corpus.read_bytes()
    rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    start = time.perf_counter()
    base = build_embedded(Settings.from_env(), PACKAGED[args.base], field="MODERATION_CLASSIFIER")
    features_of = Features(base, LAYERS[args.base])
    features = torch.cat([features_of([r["text"] for r in rows[i : i + 16]]) for i in range(0, len(rows), 16)])
    x = features.double().numpy()
    print(f"features of {len(rows)} requests in {time.perf_counter() - start:.0f} s")
    labels = np.array([r["category"] or SAFE for r in rows])
    unsafe = labels != SAFE
    p_unsafe = out_of_fold(x, labels, args.c, args.seed)
    threshold = pick_threshold(p_unsafe, unsafe, args.max_fp)
    recall, fp = float((p_unsafe[unsafe] > threshold).mean()), float((p_unsafe[~unsafe] > threshold).mean())
    model = fit(x, labels, args.c, args.seed)
    weight, bias = folded_head(model)
    card = Card(
        labels=tuple(model.classes_),
        layers=LAYERS[args.base],
        threshold=threshold,
        base=args.base,
        trained_on=f"{args.corpus.name} sha256:{hashlib.sha256(data).hexdigest()[:16]}",
        notes=(
            f"logistic regression on {PACKAGED[args.base].name}, C={args.c}, on {len(rows)} dev requests "
            f"({int(unsafe.sum())} unsafe); threshold "
            f"from {FOLDS}-fold cross-validation at <= {args.max_fp:.0%} false positives: recall {recall:.3f}, "
            f"false positives {fp:.3f} there"
        ),
    )
    save_classifier(args.out, card, weight, bias)
    print(
        f"wrote {args.out}: threshold {threshold:.3f}; {FOLDS}-fold cross-validation on the dev requests: recall "
        f"{recall:.3f}, false positives {fp:.3f}"
    )
    return 0
