"""The one place that picks the device and dtype, and the process-wide attention switches that go with them."""

from __future__ import annotations

import logging

import torch

from ..errors import ErrorCode, SetupError

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device_and_dtype(*, device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """DEVICE and DTYPE -> torch's: CUDA with bf16 (fp16 without bf16) when there is a GPU, else CPU with bf16."""
    # On every CPU measured, bf16 weights decode fastest: decoding reads every weight once per token (docs/engine.md).
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SetupError(
            ErrorCode.BadConfig, "DEVICE", "is 'cuda' but no CUDA GPU is visible.", "Unset DEVICE or set it to 'cpu'."
        )
    if dtype == "auto":
        chosen = torch.float16 if device == "cuda" and not torch.cuda.is_bf16_supported() else torch.bfloat16
    else:
        chosen = _DTYPES[dtype]
    return torch.device(device), chosen


def pick_prefill_dtype(device: torch.device, dtype: torch.dtype, *, setting: str = "auto") -> torch.dtype | None:
    """The dtype prompts are prefilled in, when not the weights' (None): float32 under DTYPE=auto on a CPU without
    bf16 matrix instructions, where a bf16 prefill is 3.5 to 6 times slower than float32 (docs/engine.md)."""
    if setting != "auto" or device.type != "cpu" or dtype == torch.float32 or cpu_has_bf16_matmul():
        return None
    return torch.float32


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX) and torch may use it: not when its
    kernels are held to AVX2 (ATEN_CPU_CAPABILITY=avx2, as a check of the AVX2 figures on an AMX machine does)."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def cpu_capability() -> str:
    """torch's ATen kernel level (AVX2, AVX512, ...) and whether bf16 matrix products are native: for reports."""
    return f"{torch.backends.cpu.get_cpu_capability()}, bf16 matmul {'native' if cpu_has_bf16_matmul() else 'emulated'}"


def keep_cudnn_out_of_attention() -> None:
    """On CUDA, let sdpa choose among flash, memory-efficient and math attention, not cuDNN (process-wide)."""
    # torch 2.11's CUDA build ranks cuDNN attention first on Hopper GPUs, and with an additive bias (ALiBi) cuDNN
    # builds a new graph for every new shape ("may trigger excessive recompilation", in libtorch_cuda): every new
    # prompt length would stall the decode thread, and transformers' own decoding once per token. The
    # memory-efficient kernel takes the bias with no per-shape setup.
    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        logger.info("sdpa: cuDNN attention off (it rebuilds per shape with an ALiBi bias)")
