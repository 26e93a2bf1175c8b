"""The one place that picks the device and dtype, and the process-wide attention switches that go with them."""

from __future__ import annotations

import logging

import torch

from ..errors import ErrorCode, SetupError

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device_and_dtype(*, device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """DEVICE and DTYPE -> torch's: CUDA with bf16 (fp16 without bf16) when there is a GPU, else CPU with bf16."""
    # bf16 measured fastest on a 2-core CPU (docs/benchmarks.md); DTYPE=float32 is for bit-exact comparisons.
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


def keep_cudnn_out_of_attention() -> None:
    """On CUDA, let sdpa choose among flash, memory-efficient and math attention, not cuDNN (process-wide)."""
    # torch 2.11's CUDA build ranks cuDNN attention first on Hopper GPUs, and with an additive bias (ALiBi) cuDNN
    # builds a new graph for every new shape ("may trigger excessive recompilation", in libtorch_cuda): every new
    # prompt length would stall the decode thread, and transformers' own decoding once per token. The
    # memory-efficient kernel takes the bias with no per-shape setup.
    if torch.backends.cuda.cudnn_sdp_enabled():
        torch.backends.cuda.enable_cudnn_sdp(False)
        logger.info("sdpa: cuDNN attention off (it rebuilds per shape with an ALiBi bias)")
