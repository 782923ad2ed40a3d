"""Where and in which dtype the torch runtime computes (`--device`, `--dtype` of genrecal-bench and
genrecal-demo).

    place = resolve_placement("auto", "auto", checkpoint_dtype("out/student"))
    place.device, place.dtype, place.reason   # e.g. "cuda", "bfloat16", "auto on CUDA: the checkpoint's dtype"

- device `auto`: CUDA when torch sees a GPU, else the CPU. `cuda` without a visible GPU is refused.
- dtype `auto`: on CUDA the checkpoint's own dtype (a bf16 checkpoint computes in bf16: half the
  memory of fp32, e.g. 16 GB instead of 32 GB for an 8B teacher, and the dtype it was trained in); on
  the CPU fp32, whatever the checkpoint holds (bf16/fp16 weights are upcast exactly): fp32 is the
  precision every export's parity is measured against, and CPUs without bf16 matrix units (AVX512-BF16
  / AMX, most laptops and phones) run bf16/fp16 matmuls slower than fp32. An explicit --dtype is
  always obeyed (bf16 on a CPU that has those units, to halve memory).
Importing this module does not import torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genrecal.runtimes.base import RuntimeError_

DEVICES = ("auto", "cpu", "cuda")
# --dtype value -> torch dtype name (None: auto)
DTYPES = {"auto": None, "fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}
SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" | "cuda"
    dtype: str  # torch dtype name the weights and activations use: "float32" | "bfloat16" | "float16"
    reason: str  # why this dtype (recorded in every timing record)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def checkpoint_dtype(path: str | Path) -> str | None:
    """The dtype a transformers dir's config.json records ("bfloat16", ...), or None when it records none."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype")
    return str(value).replace("torch.", "") if value else None


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' for --device auto|cpu|cuda; RuntimeError_ when CUDA is asked for and absent."""
    import torch

    if device not in DEVICES:
        raise RuntimeError_(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RuntimeError_(f"--device cuda: torch {torch.__version__} ({built}) sees no CUDA device; "
                            "use --device cpu or auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_placement(device: str = "auto", dtype: str = "auto", checkpoint: str | None = None) -> Placement:
    """The device and dtype to load a model with (see the module docstring for the auto rules)."""
    if dtype not in DTYPES:
        raise RuntimeError_(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    where = resolve_device(device)
    if DTYPES[dtype]:
        return Placement(where, DTYPES[dtype], "asked for (--dtype)")
    if where == "cpu":
        return Placement(where, "float32", f"auto on CPU: fp32 (checkpoint: {checkpoint or 'no dtype recorded'})")
    if checkpoint in SHORT:
        return Placement(where, checkpoint, "auto on CUDA: the checkpoint's dtype")
    return Placement(where, "float32", f"auto on CUDA: fp32 (checkpoint dtype {checkpoint or 'not recorded'})")
