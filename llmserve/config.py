"""Every environment variable the project reads, declared once with its default."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ErrorCode, SetupError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_MODEL_ID = "tiiuae/falcon-rw-1b"
# The commit of tiiuae/falcon-rw-1b this project was pinned to; a new commit upstream cannot
# change what a built image serves.
DEFAULT_MODEL_REVISION = "e4b9872bb803165eb22f0a867d4e6a64d34fce19"
# MODEL_ID's name for the real instruct model that comes from the package index (llmserve/serving/embedded.py).
EMBEDDED_MODEL_ID = "embedded"
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "fast", "batched", "transformers")
COMPILE_MODES = ("auto", "on", "off", "cudagraphs")
MODERATION_MODES = ("off", "input", "output", "both")
DEFAULT_MODERATION_RULES = PROJECT_ROOT / "llmserve" / "moderation" / "rules.yaml"


@dataclass(frozen=True)
class Settings:
    # A Hugging Face repo id ("tiiuae/falcon-rw-1b"), a local directory with config.json, or "embedded".
    model_id: str = DEFAULT_MODEL_ID
    # Whether MODEL_ID was set: the local scripts fall back to the embedded model only when it was not.
    model_id_given: bool = False
    # Commit, tag or branch on the hub; pinned for the default model, "main" for others.
    model_revision: str = DEFAULT_MODEL_REVISION
    # "auto" = bfloat16 on CUDA and on CPU (measured fastest there: docs/benchmarks.md); or force one.
    dtype: str = "auto"
    # "auto" = CUDA when available, else CPU.
    device: str = "auto"
    # Hugging Face cache layout; inside the project so `cog build` bakes the weights in.
    weights_dir: Path = PROJECT_ROOT / "weights"
    # Only needed for gated or private models: HF_TOKEN, else HUGGINGFACE_HUB_TOKEN (the older name).
    hf_token: str | None = None
    # Cog's own variable: prediction slots, and so the batch the engine decodes at once. `cog build` bakes
    # predict.py's @cog.concurrent(max=32) into the image; elsewhere it defaults to 1, as in Cog.
    max_concurrency: int = 1
    # "auto" = the fast static-cache path for Falcon-RW (ALiBi) models, transformers for the rest.
    engine: str = "auto"
    # The fast path's decode step: "cudagraphs" = CUDA graphs of the uncompiled step (no compiler: starts in
    # seconds), "on" = torch.compile (with CUDA graphs on CUDA), "off" = neither, "auto" = cudagraphs on CUDA, else off.
    compile: str = "auto"
    # Where compiled code is kept between setups (inductor's cache); inside WEIGHTS_DIR so `cog build` bakes in
    # what a setup on the target GPU compiled. Defaults to TORCHINDUCTOR_CACHE_DIR when only that is set.
    compile_cache: Path = PROJECT_ROOT / "weights" / "torch-compile"
    # What the moderation stage checks (llmserve/moderation): the question, the answer as it streams, or both.
    moderation: str = "both"
    # Per-category patterns in Spanish and English; point it at your own file to extend or replace them.
    moderation_rules: Path = DEFAULT_MODERATION_RULES
    # A Llama Guard style classifier (hub id or local dir), run after the rules; empty = rules only.
    moderation_model: str = ""
    # Its commit, tag or branch on the hub; pin a commit for reproducible images.
    moderation_model_revision: str = "main"
    # The trained input classifier run after the rules (llmserve/moderation/classifier/, on its base model's
    # hidden states, Gemma 3 270M from PyPI): "on", "off", or a directory that scripts/train_moderation --out wrote.
    moderation_classifier: str = "on"

    @property
    def is_local(self) -> bool:
        """MODEL_ID names a directory on disk rather than a hub repo."""
        return not self.is_embedded and Path(self.model_id).expanduser().is_dir()

    @property
    def is_embedded(self) -> bool:
        """MODEL_ID names the embedded model, fetched from the package index rather than the hub."""
        return self.model_id == EMBEDDED_MODEL_ID

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        model_id = env.get("MODEL_ID") or DEFAULT_MODEL_ID
        weights_dir = Path(env.get("WEIGHTS_DIR") or cls.weights_dir).expanduser()
        default_revision = DEFAULT_MODEL_REVISION if model_id == DEFAULT_MODEL_ID else "main"
        settings = cls(
            model_id=model_id,
            model_id_given=bool(env.get("MODEL_ID")),
            model_revision=env.get("MODEL_REVISION") or default_revision,
            dtype=(env.get("DTYPE") or "auto").lower(),
            device=(env.get("DEVICE") or "auto").lower(),
            weights_dir=weights_dir,
            hf_token=env.get("HF_TOKEN") or env.get("HUGGINGFACE_HUB_TOKEN") or None,
            max_concurrency=_whole_number(env, "COG_MAX_CONCURRENCY", cls.max_concurrency),
            engine=(env.get("ENGINE") or "auto").lower(),
            compile=(env.get("COMPILE") or "auto").lower(),
            compile_cache=Path(
                env.get("COMPILE_CACHE_DIR") or env.get("TORCHINDUCTOR_CACHE_DIR") or weights_dir / "torch-compile"
            ).expanduser(),
            moderation=(env.get("MODERATION") or "both").lower(),
            moderation_rules=Path(env.get("MODERATION_RULES") or DEFAULT_MODERATION_RULES).expanduser(),
            moderation_model=env.get("MODERATION_MODEL") or "",
            moderation_model_revision=env.get("MODERATION_MODEL_REVISION") or "main",
            moderation_classifier=env.get("MODERATION_CLASSIFIER") or "on",
        )
        for name, value, allowed in (
            ("DTYPE", settings.dtype, DTYPES),
            ("DEVICE", settings.device, DEVICES),
            ("ENGINE", settings.engine, ENGINES),
            ("COMPILE", settings.compile, COMPILE_MODES),
            ("MODERATION", settings.moderation, MODERATION_MODES),
        ):
            if value not in allowed:
                default = "'both'" if name == "MODERATION" else "'auto'"
                raise SetupError(
                    ErrorCode.BadConfig,
                    name,
                    f"{value!r} is not one of {', '.join(allowed)}.",
                    f"Set {name} to one of those, or unset it for {default}.",
                )
        return settings


def keep_compiled_code_in(directory: Path) -> Path:
    """Point inductor's caches (FX graphs, AOT autograd, Triton kernels) at `directory`, process-wide.

    Returns the directory in use: a temporary one when `directory` cannot be written (a read-only image).
    """
    # inductor reads TORCHINDUCTOR_CACHE_DIR whenever it compiles, and sets it to a temporary directory the first
    # time it finds it unset (loading a model with transformers does that), so this overwrites it. A cache
    # written for another GPU, torch or model simply misses: inductor keys every entry on them.
    directory = directory.expanduser().resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        writable = os.access(directory, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        fallback = Path(tempfile.gettempdir()) / "llmserve-torch-compile"
        logger.warning("COMPILE_CACHE_DIR %s cannot be written; compiling into %s", directory, fallback)
        directory = fallback
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    return directory


def read_env_file(env: Mapping[str, str] | None = None) -> Path | None:
    """For the local scripts: put ENV_FILE's variables (default: .env at the project root) into os.environ.

    Variables already set win. Returns the file read, or None when there is none.
    """
    from dotenv import load_dotenv  # python-dotenv: in requirements-dev.txt, as the scripts are

    env = os.environ if env is None else env
    path = Path(env.get("ENV_FILE") or PROJECT_ROOT / ".env").expanduser()
    if not path.is_file():
        return None
    load_dotenv(path, override=False)
    return path


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        problem = f"{raw!r} is not a whole number of at least 1."
        raise SetupError(ErrorCode.BadConfig, name, problem, f"Set {name} to one.")
    return int(raw)


@dataclass(frozen=True)
class ServerSettings:
    # Port of the Cog HTTP server that scripts/serve starts (its --port wins).
    port: int = 5000
    # Its prediction slots when COG_MAX_CONCURRENCY is unset: 2, not Cog's 1, because coglet frees a slot a moment
    # after a prediction's last event, so a client that sends its next request at once would get 409 from one slot.
    max_concurrency: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        return cls(
            port=_whole_number(env, "PORT", cls.port),
            max_concurrency=_whole_number(env, "COG_MAX_CONCURRENCY", cls.max_concurrency),
        )


@dataclass(frozen=True)
class OpenAIServerSettings:
    # Where scripts/openai_server listens (--host and --port win): loopback, unless told to serve other machines.
    host: str = "127.0.0.1"
    port: int = 8000
    # When set, every /v1 request must send `Authorization: Bearer <this>` (OpenAI(api_key=...) does).
    api_key: str | None = None
    # The engine's decode slots when COG_MAX_CONCURRENCY is unset: a server for several clients batches them.
    slots: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OpenAIServerSettings:
        env = os.environ if env is None else env
        return cls(
            host=env.get("OPENAI_SERVER_HOST") or cls.host,
            port=_whole_number(env, "OPENAI_SERVER_PORT", cls.port),
            api_key=env.get("OPENAI_SERVER_API_KEY") or None,
            slots=_whole_number(env, "COG_MAX_CONCURRENCY", cls.slots),
        )


@dataclass(frozen=True)
class ReplicateSettings:
    # Replicate API token (https://replicate.com/account/api-tokens); the replicate library sends it.
    api_token: str | None = None
    # The replicate library's own override of https://api.replicate.com; tests point it at 127.0.0.1.
    base_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReplicateSettings:
        env = os.environ if env is None else env
        return cls(api_token=env.get("REPLICATE_API_TOKEN") or None, base_url=env.get("REPLICATE_BASE_URL") or None)


@dataclass(frozen=True)
class JudgeSettings:
    # Bearer token for an OpenAI-compatible judge (scripts/evaluate --judge openai:MODEL); local servers
    # such as vLLM or Ollama need none.
    openai_api_key: str | None = None
    # The judge's endpoint when --judge-base-url is not given; the same variable the openai library reads.
    openai_base_url: str = "https://api.openai.com/v1"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> JudgeSettings:
        env = os.environ if env is None else env
        return cls(
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=env.get("OPENAI_BASE_URL") or cls.openai_base_url,
        )


@dataclass(frozen=True)
class DockerSettings:
    # Docker's client configuration directory (Docker's own variable): `cog login` records the r8.im login in
    # its config.json, or in the credential store that file names.
    config_dir: Path = Path.home() / ".docker"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DockerSettings:
        env = os.environ if env is None else env
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        return cls(config_dir=Path(env.get("DOCKER_CONFIG") or home / ".docker").expanduser())
