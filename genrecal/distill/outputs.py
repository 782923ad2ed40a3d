"""What a run leaves behind: a clean HF student with a model card, the Recalibrator, the log."""
from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from pathlib import Path

import torch

from genrecal.artifacts.integrity import disk_full_guard
from genrecal.distill.precision import cast_weights
from genrecal.fsutil import atomic_dir, write_text_atomic

LOG_NAME = "train_log.jsonl"
RECAL_MARKERS = ("recal", "proj_pre", "proj_post")
DISK_HINT = "the checkpoints are intact: free some space and run the same command with --resume"


def truncate_log(path: Path, keep_lines: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from."""
    if not path.exists():
        return
    write_text_atomic(path, "".join(path.read_text().splitlines(keepends=True)[:keep_lines]))


def write_student(out: Path, student, weights: dict[str, torch.Tensor], dtype: torch.dtype,
                  card: str | None = None) -> Path:
    """Save the student as a plain transformers model dir (safetensors in `dtype` + processor + the model
    card `card` as README.md), atomically: a full disk leaves no student/ (DiskFullError).

    weights: the student's full state dict (gathered from every process under FSDP/ZeRO-3)."""
    leaked = [k for k in weights if any(m in k for m in RECAL_MARKERS)]
    if leaked:
        raise RuntimeError(f"student state has Recalibrator tensors: {leaked[:3]}")
    with atomic_dir(out / "student") as tmp, disk_full_guard(out, "the student", DISK_HINT):
        student.model.save_pretrained(tmp, state_dict=cast_weights(weights, dtype))
        config = copy.deepcopy(student.model.config)  # save_pretrained wrote the in-memory (fp32) dtype
        for sub in [config] + [getattr(config, key) for key in getattr(config, "sub_configs", {})]:
            if sub is not None:
                sub.dtype = dtype
        config.save_pretrained(tmp)
        with _users_pad_token(student):
            student.processor.save_pretrained(tmp)
        if card is not None:
            (tmp / "README.md").write_text(card)
    return out / "student"


@contextmanager
def _users_pad_token(student):
    """Save the tokenizer as the user gave it: without the pad token models.pad_fallback set in memory."""
    tokenizer = student.tokenizer
    fallback = tokenizer.pad_token if getattr(student, "pad_note", None) else None
    if fallback is not None:
        tokenizer.pad_token = None
    try:
        yield
    finally:
        if fallback is not None:
            tokenizer.pad_token = fallback


def model_card(cfg, student, report, losses: dict) -> str:
    stages = ", ".join(cfg.stage_names())
    loss_lines = "\n".join(f"| {stage} | {', '.join(f'{k} {v:.4f}' for k, v in terms.items())} |"
                           for stage, terms in losses.items())
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [genrecal, distillation]
---
# {Path(cfg.student).name} distilled with genrecal

- **Student**: `{cfg.student}` (family `{student.model_type}`)
- **Teacher**: `{cfg.teacher or 'none'}`
- **Data**: `{cfg.data}`{f' (first {cfg.limit})' if cfg.limit else ''}; skipped samples: {report.total}
- **Method**: `{cfg.method}`; stages: {stages}; {cfg.max_steps} optimizer steps, batch {cfg.batch_size} x accum {cfg.grad_accum}
- **Losses** (method page defaults: L_ar + L_kl (+ L_reg) in align, + L_sft in distill, L_sft in sft; weights
  ar {cfg.w_ar}, kl {cfg.w_kl}, reg {cfg.w_reg}, sft {cfg.w_sft}, T = {cfg.temperature})

Last logged loss terms per stage:

| stage | terms |
|---|---|
{loss_lines}

This directory holds only the student: the Recalibrator used in training is in `../recalibrator/`
and is never needed to run this model. Load it with
`AutoModelForImageTextToText.from_pretrained(DIR)` and `AutoProcessor.from_pretrained(DIR)`.
"""


def last_losses(log_path: Path) -> dict:
    last = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            rec = json.loads(line)
            last[rec["stage"]] = {k: v for k, v in rec.items() if k in ("loss", "ar", "kl", "reg_ar", "reg_kl", "sft",
                                                                          "uld", "kd")}
    return last


def split_weights(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a flat `student.` / `recal.` state dict under `prefix`, without it."""
    return {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}


def write_outputs(out: Path, cfg, student, recal, report, weights: dict[str, torch.Tensor],
                  dtype: torch.dtype) -> None:
    """The run's results: OUT/student (cast to `dtype`, with a model card), OUT/recalibrator, the config.

    weights: full state dict with `student.` / `recal.` keys (see checkpoint.module_weights)."""
    write_student(out, student, split_weights(weights, "student"), dtype,
                  model_card(cfg, student, report, last_losses(out / LOG_NAME)))
    with disk_full_guard(out, "genrecal_distill.json", DISK_HINT):
        write_text_atomic(out / "genrecal_distill.json", json.dumps(cfg.to_dict(), indent=2, default=list))
    if recal is not None:
        with atomic_dir(out / "recalibrator") as tmp, disk_full_guard(out, "the Recalibrator", DISK_HINT):
            recal.save(tmp, split_weights(weights, "recal"))


__all__ = ["write_outputs", "truncate_log", "LOG_NAME"]
