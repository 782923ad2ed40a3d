"""`--target jetson --precision int4_awq|fp8|int8_sq|nvfp4`: Edge-LLM's quantiser, on a CUDA GPU only.

    from genrecal.export.edgellm.quantize import require_quantizable, quantize
    require_quantizable(Path("out/hf"), "int4_awq", calib)     # refuses before any work
    quantize(stage, qdir, "int4_awq", calib, python)            # -> a quantised checkpoint for the exporter

Edge-LLM quantises with NVIDIA ModelOpt, which calibrates on a CUDA GPU; without one the export stops with
one line (NO_GPU). Calibration uses a local JSONL (quantize_run.py: {"text"} and/or {"image", "question"}
rows, e.g. the student's distillation data written out), given as `calib` or $GENRECAL_EDGELLM_CALIB: never
Edge-LLM's default sets, which it downloads. INT4-AWQ (group 128) is refused when a Linear's input width
does not divide by 128 (checks.check_int4_group). Untested here: this machine has no GPU.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from genrecal.artifacts import edgellm as layout
from genrecal.export.edgellm.env import EdgeLLMError, last_error

NO_GPU = ("edgellm {precision}: Edge-LLM's quantiser (NVIDIA ModelOpt) calibrates on a CUDA GPU and none is "
          "visible here; export --precision fp16 here (the default) and quantise on a machine with CUDA")


def cuda_visible() -> bool:
    """A CUDA GPU this process could hand to the quantiser (torch's view, else the driver's tool)."""
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    return shutil.which("nvidia-smi") is not None and Path("/proc/driver/nvidia").exists()


def calib_file(calib: str | os.PathLike | None) -> Path | None:
    given = calib or os.environ.get("GENRECAL_EDGELLM_CALIB")
    return Path(given) if given else None


def require_quantizable(hf_dir: Path, precision: str, calib: str | os.PathLike | None = None,
                        cuda: bool | None = None) -> Path | None:
    """Refuse, before any work, what cannot be quantised here; returns the calibration file (None: fp16)."""
    from genrecal.export.edgellm.checks import check_int4_group

    if precision not in layout.PRECISIONS:
        raise EdgeLLMError(f"edgellm precision {precision!r}: choose one of {', '.join(layout.PRECISIONS)}")
    if precision == "fp16":
        return None
    if not (cuda_visible() if cuda is None else cuda):
        raise EdgeLLMError(NO_GPU.format(precision=precision))
    if precision == "int4_awq":
        group = check_int4_group(Path(hf_dir), precision)
        if not group["passed"]:
            raise EdgeLLMError(f"edgellm int4_awq: {group['detail']}")
    path = calib_file(calib)
    if path is None or not path.is_file():
        raise EdgeLLMError(f"edgellm {precision}: calibration needs a local JSONL ($GENRECAL_EDGELLM_CALIB, rows "
                           "{\"text\"} or {\"image\", \"question\"}); Edge-LLM's default sets would be downloaded")
    return path


def quantize(stage: Path, qdir: Path, precision: str, calib: Path, python: Path, timeout: int = 7200) -> dict:
    """Edge-LLM's quantiser on the fp16 staging copy -> `qdir` (a checkpoint its exporter reads)."""
    runner = Path(__file__).with_name("quantize_run.py")
    cmd = [str(python), str(runner), "--model-dir", str(stage), "--output-dir", str(qdir),
           "--quantization", precision, "--calib", str(calib)]
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EdgeLLMError(f"Edge-LLM's quantiser took over {timeout} s") from None
    if done.returncode:
        raise EdgeLLMError(f"Edge-LLM's quantiser ({precision}) failed: {last_error(done.stderr + done.stdout)}")
    return {"command": " ".join(cmd), "quantization": precision, "calib": str(calib),
            "python": sys.executable if python is None else str(python)}
