"""setup() in one call: settings -> weights on disk -> engine on its device -> warm-up -> Answerer."""

from __future__ import annotations

import logging
import time

from ..config import Settings
from ..engine.model import Engine
from ..errors import ErrorCode, SetupError
from ..request.answer import Answerer
from ..request.params import SamplingParams
from .embedded import EMBEDDED
from .weights import resolve_model_path

logger = logging.getLogger(__name__)

_WARMUP = SamplingParams.plain_greedy(2)


def load_answerer(settings: Settings, *, allow_download: bool = True) -> Answerer:
    """Load the configured model and prove it can generate, so a broken model fails at boot."""
    start = time.perf_counter()
    path = resolve_model_path(settings, allow_download=allow_download)
    engine = Engine.from_settings(settings, path)
    name = settings.model_id
    if settings.is_embedded:
        name = EMBEDDED.label
    elif not settings.is_local:
        # A snapshot directory is named for the commit it holds: say which, when the revision is a branch.
        resolved = "" if path.name == settings.model_revision else f" (commit {path.name})"
        name = f"{settings.model_id}@{settings.model_revision}{resolved}"
    try:
        engine.warm_up()  # first, so that the generation below already runs the compiled or captured step
        list(engine.generate(engine.encode("Hello"), _WARMUP))
    except Exception as e:  # any failure here means the model cannot serve; say so at boot
        engine.close()
        raise SetupError(
            ErrorCode.WarmupFailed,
            "MODEL_ID",
            f"{name} loaded but failed a 2-token warm-up generation: {type(e).__name__}: {e}",
            "Check that MODEL_ID is a causal LM and that DTYPE and DEVICE suit this machine (try DTYPE=float32).",
        ) from e
    logger.info(
        "ready: model=%s path=%s device=%s dtype=%s context=%d tokens engine=%s slots=%d, setup took %.1fs",
        name,
        path,
        engine.device,
        str(engine.dtype).removeprefix("torch."),
        engine.context_length,
        engine.backend_name,
        engine.backend.slots,
        time.perf_counter() - start,
    )
    return Answerer(engine, model_name=name)
