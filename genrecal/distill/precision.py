"""Precision: the dtype of the frozen teacher and of the compute, and the dtype the student is saved in.

Trainable weights (student, Recalibrator) are always fp32 master copies. bf16/fp16 compute runs
under Accelerate's mixed precision (autocast, plus a gradient scaler for fp16), so an AdamW
update of 1e-5 on a weight of 0.02 is kept instead of rounding to zero as it would in bf16.
"""
from __future__ import annotations

import os

import torch

from genrecal.distill.config import ConfigError

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
NAMES = {v: k for k, v in TORCH_DTYPES.items()}
MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}  # Accelerate's names


def dtype_name(dtype: torch.dtype) -> str:
    """bf16 | fp16 | fp32 (any other dtype counts as fp32)."""
    return NAMES.get(dtype, "fp32")


def _runs_on(name: str, device_type: str) -> bool:
    if name == "fp16":
        return device_type == "cuda"  # CPU autocast has no fp16 gradient scaler in Accelerate
    if name == "bf16":
        return device_type == "cpu" or (device_type == "cuda" and torch.cuda.is_bf16_supported())
    return True


def resolve_dtype(requested: str, checkpoint: torch.dtype, device_type: str) -> str:
    """The run's compute/teacher dtype name (bf16 | fp16 | fp32).

    requested: auto | bf16 | fp16 | fp32. auto takes Accelerate's launch setting
    (ACCELERATE_MIXED_PRECISION) if it is bf16/fp16, else `checkpoint` (the teacher's saved
    dtype), and falls back to fp32 where that cannot run. An explicit choice that cannot run on
    `device_type` ("cpu" | "cuda") raises ConfigError.
    """
    if requested == "auto":
        launch = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        name = launch if launch in ("bf16", "fp16") else dtype_name(checkpoint)
        return name if _runs_on(name, device_type) else "fp32"
    if not _runs_on(requested, device_type):
        where = "this GPU" if device_type == "cuda" else "CPU"
        raise ConfigError(f"--dtype {requested} cannot run on {where} (fp16 needs a GPU, bf16 a GPU that supports "
                          "it or the CPU): use --dtype bf16 or fp32")
    return requested


def save_dtype(requested: str, student_checkpoint: torch.dtype) -> torch.dtype:
    """The saved student's dtype: `requested` (bf16 | fp16 | fp32) or, for auto, the input checkpoint's."""
    return student_checkpoint if requested == "auto" else TORCH_DTYPES[requested]


def cast_weights(weights: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors cast to `dtype` (others unchanged); tensors several keys share (tied
    embeddings) stay one shared tensor, so `save_pretrained` still sees them as tied."""
    cast: dict[int, torch.Tensor] = {}
    out = {}
    for key, value in weights.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        ptr = value.data_ptr()
        if ptr not in cast:
            cast[ptr] = value.detach().to(dtype)
        out[key] = cast[ptr]
    return out
