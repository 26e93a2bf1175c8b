"""Every environment variable the project reads, declared once with its default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ErrorCode, SetupError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_MODEL_ID = "tiiuae/falcon-rw-1b"
# The commit of tiiuae/falcon-rw-1b this project was pinned to; a new commit upstream cannot
# change what a built image serves.
DEFAULT_MODEL_REVISION = "e4b9872bb803165eb22f0a867d4e6a64d34fce19"
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Settings:
    # A Hugging Face repo id ("tiiuae/falcon-rw-1b") or a local directory with config.json.
    model_id: str = DEFAULT_MODEL_ID
    # Commit, tag or branch on the hub; pinned for the default model, "main" for others.
    model_revision: str = DEFAULT_MODEL_REVISION
    # "auto" = bfloat16 on CUDA and on CPU (measured fastest there, see README); or force one.
    dtype: str = "auto"
    # "auto" = CUDA when available, else CPU.
    device: str = "auto"
    # Hugging Face cache layout; inside the project so `cog build` bakes the weights in.
    weights_dir: Path = PROJECT_ROOT / "weights"
    # Only needed for gated or private models.
    hf_token: str | None = None

    @property
    def is_local(self) -> bool:
        """MODEL_ID names a directory on disk rather than a hub repo."""
        return Path(self.model_id).expanduser().is_dir()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        model_id = env.get("MODEL_ID") or DEFAULT_MODEL_ID
        default_revision = DEFAULT_MODEL_REVISION if model_id == DEFAULT_MODEL_ID else "main"
        settings = cls(
            model_id=model_id,
            model_revision=env.get("MODEL_REVISION") or default_revision,
            dtype=(env.get("DTYPE") or "auto").lower(),
            device=(env.get("DEVICE") or "auto").lower(),
            weights_dir=Path(env.get("WEIGHTS_DIR") or cls.weights_dir).expanduser(),
            hf_token=env.get("HF_TOKEN") or None,
        )
        for name, value, allowed in (("DTYPE", settings.dtype, DTYPES), ("DEVICE", settings.device, DEVICES)):
            if value not in allowed:
                raise SetupError(
                    ErrorCode.BadConfig,
                    name,
                    f"{value!r} is not one of {', '.join(allowed)}.",
                    f"Set {name} to one of those, or unset it for 'auto'.",
                )
        return settings


@dataclass(frozen=True)
class ServerSettings:
    # Port of the Cog HTTP server that scripts/serve starts (its --port wins).
    port: int = 5000
    # Prediction slots (Cog's own variable): run() is synchronous, so the Cog server allows only 1.
    max_concurrency: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        values = {}
        for name, field_name in (("PORT", "port"), ("COG_MAX_CONCURRENCY", "max_concurrency")):
            raw = env.get(name) or str(getattr(cls, field_name))
            if not raw.isdigit():
                raise SetupError(ErrorCode.BadConfig, name, f"{raw!r} is not a whole number.", f"Set {name} to one.")
            values[field_name] = int(raw)
        if values["max_concurrency"] != 1:
            raise SetupError(
                ErrorCode.BadConfig,
                "COG_MAX_CONCURRENCY",
                f"is {values['max_concurrency']}, but run() is synchronous and the Cog server serves it one "
                "prediction at a time.",
                "Unset COG_MAX_CONCURRENCY or set it to 1; scale out with more instances.",
            )
        return cls(**values)
