"""The Engine: a causal LM and its tokenizer loaded on their device, decoding many requests through the scheduler."""

from __future__ import annotations

import copy
import logging
import queue
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import Settings, keep_compiled_code_in
from ..errors import ErrorCode, InputError, SetupError
from ..request.cancel import Cancel
from ..request.params import SamplingParams
from . import falcon, threads
from .batched import BatchedSlots, Unsupported
from .device import keep_cudnn_out_of_attention, pick_device_and_dtype, pick_prefill_dtype
from .generic import TransformersSlots
from .grammar import Grammars
from .scheduler import Backend, Event, Scheduler

# How often a reader with no new token checks that the decode thread is still there.
_WATCH_SECONDS = 5.0

logger = logging.getLogger(__name__)

# Where configs keep the trained context length, in order of preference.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")
_FALLBACK_CONTEXT = 2048


def pick_backend(
    model,
    *,
    kind: str,
    slots: int,
    max_length: int,
    compile: str,
    compile_cache: Path | None = None,
    prefill_model=None,
) -> Backend:
    """The fast Falcon-RW path when the model has that layout (ENGINE=auto|fast); else the batched path when the
    model passes its check (ENGINE=auto|batched); else a forward per slot (ENGINE=transformers, or the fallback).
    A compiled step keeps what it compiled in `compile_cache`, so the next setup reads it back."""
    if kind == "fast" and not falcon.supports(model.config):
        raise SetupError(
            ErrorCode.BadConfig,
            "ENGINE",
            f"is 'fast', but the fast path only runs Falcon-RW (ALiBi) models, not {model.config.model_type!r}.",
            "Unset ENGINE (auto picks the path) or set ENGINE=transformers.",
        )
    device = next(model.parameters()).device
    if compile == "cudagraphs" and device.type != "cuda":
        raise SetupError(
            ErrorCode.BadConfig,
            "COMPILE",
            f"is 'cudagraphs', but the model is on the {device.type.upper()}: CUDA graphs need a CUDA GPU.",
            "Unset COMPILE (auto), or set COMPILE=on to compile the step for this device, or COMPILE=off.",
        )
    spread = len(set(getattr(model, "hf_device_map", {}).values())) > 1
    if kind == "fast" and spread:
        raise SetupError(
            ErrorCode.BadConfig,
            "ENGINE",
            "is 'fast', but the model is spread over several GPUs and the fast path keeps its cache on one.",
            "Unset ENGINE (auto picks the batched or per-request path) or make one GPU visible (CUDA_VISIBLE_DEVICES).",
        )
    if kind in ("auto", "fast") and falcon.supports(model.config) and not spread:
        step = decode_step_mode(compile, device)
        if step == "compiled" and compile_cache is not None:
            logger.info("the compiled decode step is cached in %s", keep_compiled_code_in(compile_cache))
        return falcon.FalconRWStatic(model, slots=slots, max_length=max_length, step=step, prefill_model=prefill_model)
    if compile in ("on", "cudagraphs"):
        logger.warning("COMPILE=%s applies to the fast Falcon-RW path only; this model runs uncompiled", compile)
    if kind == "transformers":
        return TransformersSlots(model, slots=slots, prefill_model=prefill_model)
    try:
        batched = BatchedSlots(model, slots=slots, max_length=max_length, prefill_model=prefill_model)
        batched.verify()
    except Unsupported as why:
        if kind == "batched":
            raise SetupError(
                ErrorCode.BadConfig,
                "ENGINE",
                f"is 'batched', but this {model.config.model_type!r} model does not fit the batched path: {why}.",
                "Unset ENGINE (auto falls back to a forward per request) or set ENGINE=transformers.",
            ) from why
        logger.warning("the batched path does not fit this %s model (%s): one forward per request instead",
                       model.config.model_type, why)  # fmt: skip
        return TransformersSlots(model, slots=slots, prefill_model=prefill_model)
    return batched


def decode_step_mode(compile: str, device: torch.device) -> str:
    """COMPILE -> falcon.STEPS. auto: CUDA graphs of the uncompiled step on CUDA, eager elsewhere."""
    # auto does not compile: tracing the full-size step takes longer than setup() may (docs/benchmarks.md), a
    # compile cache does not skip tracing, and compiling did not pay on CPU. COMPILE=on stays, to measure on a GPU.
    if compile == "cudagraphs" or (compile == "auto" and device.type == "cuda"):
        return "cudagraphs"
    if compile == "on":
        return "compiled"
    return "eager"


class Engine:
    """A causal LM and its tokenizer, decoding many requests at once through a slot scheduler."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        slots: int = 1,
        kind: str = "auto",
        compile: str = "auto",
        compile_cache: Path | None = None,
        eos_token_ids: frozenset[int] | None = None,
        prefill_dtype: torch.dtype | None = None,
    ) -> None:
        """`eos_token_ids` overrides the model's (benchmarks on random weights pass none, to force the length).
        `prefill_dtype` (device.pick_prefill_dtype) prefills prompts in a copy of the model in that dtype."""
        param = next(model.parameters())
        self.model = model
        self.tokenizer = tokenizer
        self.device = param.device
        self.dtype = param.dtype
        if self.device.type == "cuda":
            keep_cudnn_out_of_attention()
        else:  # the decode thread computes with torch's threads, this one with one from now on (engine/threads.py)
            threads.confine()
        self.context_length = _context_length(model.config, tokenizer)
        self.eos_token_ids = _eos_token_ids(model, tokenizer) if eos_token_ids is None else eos_token_ids
        self.prefill_dtype = _affordable(model, prefill_dtype)
        self.backend = pick_backend(
            model,
            kind=kind,
            slots=slots,
            max_length=self.context_length,
            compile=compile,
            compile_cache=compile_cache,
            prefill_model=None if self.prefill_dtype is None else copy.deepcopy(model).to(self.prefill_dtype),
        )
        self.grammars = Grammars(tokenizer, self.backend.vocab_size, self.eos_token_ids)
        self.scheduler = Scheduler(self.backend, eos_token_ids=self.eos_token_ids, grammars=self.grammars)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        slots: int = 1,
        kind: str = "auto",
        compile: str = "auto",
        compile_cache: Path | None = None,
        prefill_dtype: torch.dtype | None = None,
    ) -> Engine:
        """Load model and tokenizer from a local directory (serving.weights.resolve_model_path finds it)."""
        if not (path / "config.json").is_file():
            raise SetupError(
                ErrorCode.ModelLoadFailed,
                "MODEL_ID",
                f"{path} has no config.json.",
                "Point MODEL_ID at a directory saved with save_pretrained(), or at a hub repo id.",
            )
        if device.type == "cpu":
            threads.confine()  # before any parallel work on this thread (engine/threads.py)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            if spread_over_gpus(device, path):  # accelerate places the layers over every visible GPU
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map="auto").eval()
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
            raise SetupError(
                ErrorCode.ModelLoadFailed,
                "MODEL_ID",
                f"could not load a causal LM from {path}: {type(e).__name__}: {e}",
                "MODEL_ID must name a Hugging Face causal language model that this transformers version supports.",
            ) from e
        return cls(
            model,
            tokenizer,
            slots=slots,
            kind=kind,
            compile=compile,
            compile_cache=compile_cache,
            prefill_dtype=prefill_dtype,
        )

    @classmethod
    def from_settings(cls, settings: Settings, path: Path) -> Engine:
        device, dtype = pick_device_and_dtype(device=settings.device, dtype=settings.dtype)
        return cls.load(
            path,
            device=device,
            dtype=dtype,
            slots=settings.max_concurrency,
            kind=settings.engine,
            compile=settings.compile,
            compile_cache=settings.compile_cache,
            prefill_dtype=pick_prefill_dtype(device, dtype, setting=settings.dtype),
        )

    @property
    def backend_name(self) -> str:
        return type(self.backend).__name__

    def warm_up(self) -> None:
        """Compile or capture the decode step for every shape it will see, on the serving thread; before serving."""
        self.scheduler.warm_up()
        try:
            self.grammars.tokenizer()  # about 0.5 s, here rather than in the first json_schema request
        except InputError as e:  # the model still serves free text
            logger.warning("json_schema is not available: %s", e)

    def check_json_schema(self, schema: str) -> None:
        """Compile a json_schema (cached) or raise InputError naming it: before the request is queued."""
        self.grammars.compile(schema)

    def close(self) -> None:
        """Stop the decode thread; requests still running end with an error."""
        self.scheduler.close()

    @property
    def healthy(self) -> bool:
        """False once the device failed (errors.EngineBroken) or the decode thread is gone: nothing can be served."""
        return self.scheduler.fault is None and self.scheduler.alive

    @property
    def fault(self) -> str:
        return str(self.scheduler.fault or ("" if self.scheduler.alive else "the decode thread has stopped"))

    # Text <-> ids --------------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """The tokenizer's chat template with the assistant's turn opened; raises jinja2's TemplateError."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # Decoding ------------------------------------------------------------------------------

    def generate(
        self, prompt_ids: Sequence[int], params: SamplingParams, *, cancel: Cancel | None = None
    ) -> Iterator[int]:
        """Yield new token ids until EOS or max_new_tokens (EOS not yielded); closing it or `cancel` frees the slot."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        job = self.scheduler.submit(prompt_ids, params, events.put)
        if cancel is not None:  # from another thread, while this generator's reader waits for a token
            cancel.on_cancel(lambda: self.scheduler.cancel(job))
        try:
            while (event := self._next(events)) is not None:
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            self.scheduler.cancel(job)

    def _next(self, events: queue.SimpleQueue[Event]) -> Event:
        """The request's next event; never waits forever on a decode thread that has stopped."""
        while True:
            try:
                return events.get(timeout=_WATCH_SECONDS)
            except queue.Empty:
                if not self.scheduler.alive:
                    return RuntimeError("the engine's decode thread stopped before this request ended")


def spread_over_gpus(device: torch.device, path: Path) -> bool:
    """Whether the model at `path` loads across the visible GPUs (accelerate's device_map="auto"): when there are
    several and its weights take more than 80% of the first one (a model that fits one GPU runs fastest on one)."""
    if device.type != "cuda" or device.index is not None or torch.cuda.device_count() < 2:
        return False
    weights = sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in path.glob(pattern))
    return weights > 0.8 * torch.cuda.get_device_properties(0).total_memory


def _affordable(model, prefill_dtype: torch.dtype | None) -> torch.dtype | None:
    """`prefill_dtype` when a copy of the model in it fits in the memory still available (with a quarter to spare)."""
    if prefill_dtype is None or prefill_dtype == next(model.parameters()).dtype:
        return None
    import psutil

    size = sum(p.numel() for p in model.parameters()) * torch.finfo(prefill_dtype).bits // 8
    available = psutil.virtual_memory().available
    if size * 1.25 > available:
        logger.warning("no %s copy for prefill: it needs %.1f GB, %.1f GB is available; prompts prefill in %s",
                       prefill_dtype, size / 1e9, available / 1e9, next(model.parameters()).dtype)  # fmt: skip
        return None
    logger.info("prompts prefill in a %s copy of the model (%.1f GB): faster on this CPU", prefill_dtype, size / 1e9)
    return prefill_dtype


def _context_length(config, tokenizer) -> int:
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    model_max = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (1e30).
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        return model_max
    return _FALLBACK_CONTEXT


def _eos_token_ids(model, tokenizer) -> frozenset[int]:
    """The tokenizer's EOS, plus the generation config's EOS ids that are special tokens.

    Some configs derived from falcon-rw-1b name id 2 ('#' in its GPT-2 vocabulary) as EOS.
    """
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    special = set(getattr(tokenizer, "all_special_ids", []))
    ids.update(i for i in configured if i in special)
    return frozenset(ids)
