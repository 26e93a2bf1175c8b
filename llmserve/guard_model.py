"""Load MODERATION_MODEL, a Llama Guard style classifier, through the main model's own loader.

weights.resolve_model_path finds or fetches it (same cache, same HF_TOKEN); engine.Engine loads it on the
same device and dtype as the main model. Only this module, of the moderation ones, brings in torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from .config import Settings
from .engine import Engine
from .errors import SetupError
from .llamaguard import LlamaGuardModerator
from .weights import resolve_model_path

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
