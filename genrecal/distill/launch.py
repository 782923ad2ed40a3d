"""Launching a run: its precision and Accelerator, the models in it, the usable data, the run dir."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from genrecal.data.samples import Sample, SkipReport, load_samples
from genrecal.data.teacher_answers import keep_matching_ids
from genrecal.data.fingerprint import changed_files
from genrecal.distill.checkpoint import has_checkpoints, latest_checkpoint, load_data_record, resumable_checkpoint
from genrecal.distill.config import ConfigError, DistillConfig
from genrecal.distill.lengths import default_max_length
from genrecal.distill.models import LoadedVLM, checkpoint_dtype, load_vlm, read_config
from genrecal.distill.pairs import usable_samples
from genrecal.distill.precision import MIXED_PRECISION, TORCH_DTYPES, resolve_dtype
from genrecal.distill.recalibrator import Recalibrator

RUN_CONFIG = "run_config.json"
# fields that may change between a run and its resume; everything else must match
RESUMABLE_CHANGES = {"resume", "dry_run", "checkpoint_every", "keep_checkpoints", "stop_after", "data_workers",
                     "allow_data_change"}
SHARDED = (DistributedType.FSDP, DistributedType.DEEPSPEED)


class TokenizerMismatchError(ConfigError):
    """`kd` needs one shared tokenizer."""


class CheckpointError(ConfigError):
    """--resume where no checkpoint is whole."""


class DataChangedError(ConfigError):
    """--resume on data whose files differ from those the run was trained on."""


def device_type() -> str:
    """"cuda" when a GPU is visible, else "cpu" (the CPU path is what runs without one)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_dtype(cfg: DistillConfig) -> str:
    """The run's teacher/compute dtype name (bf16 | fp16 | fp32); reads only the checkpoint's config."""
    source = cfg.student if cfg.method == "sft" else cfg.teacher
    role = "student" if cfg.method == "sft" else "teacher"
    saved = checkpoint_dtype(read_config(source, role, cfg.trust_remote_code))
    return resolve_dtype(cfg.dtype, saved, device_type())


def make_accelerator(cfg: DistillConfig, dtype: str) -> Accelerator:
    """An Accelerator with the run's mixed precision and gradient accumulation."""
    mixed = MIXED_PRECISION[dtype]
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed and \
            int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # a later run in the same process (tests, the quality benchmark) with another precision
        AcceleratorState._reset_state()
    acc = Accelerator(cpu=device_type() == "cpu", mixed_precision=mixed, gradient_accumulation_steps=cfg.grad_accum,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    if acc.gradient_accumulation_steps != cfg.grad_accum:
        raise ConfigError(f"the launch config sets gradient accumulation {acc.gradient_accumulation_steps} but "
                          f"--grad-accum is {cfg.grad_accum}: set one of them")
    return acc


def check_kd_tokenizers(student, teacher) -> None:
    if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise TokenizerMismatchError(
            "--method kd needs teacher and student to share one tokenizer, and these differ "
            f"({len(teacher.tokenizer)} vs {len(student.tokenizer)} tokens). Use --method genrecal "
            "(GenRecal recalibrates features across vocabularies) or --method uld.")


@dataclass
class Prepared:
    student: LoadedVLM  # fp32 weights: the trainable master copy
    teacher: LoadedVLM | None  # in the run's dtype, frozen, on the device (or its device_map)
    recal: Recalibrator | None  # fp32
    samples: list[Sample]  # the usable ones (both models render them); rendered again per batch
    report: SkipReport
    max_length: int


def prepare(cfg: DistillConfig, dtype: str, device: torch.device, progress: bool = True) -> Prepared:
    """Load the models (student fp32, teacher in `dtype` on `device`) and find the usable samples."""
    student = load_vlm(cfg.student, "student", cfg.trust_remote_code, dtype=torch.float32)
    teacher = None
    if cfg.method != "sft":
        teacher = load_vlm(cfg.teacher, "teacher", cfg.trust_remote_code, dtype=TORCH_DTYPES[dtype],
                           device_map=cfg.teacher_device_map)
        teacher.model.requires_grad_(False)
        if not cfg.teacher_device_map:
            teacher.model.to(device)
    if cfg.method == "kd":
        check_kd_tokenizers(student, teacher)
    report = SkipReport()
    samples = load_samples(cfg.data, on_bad=cfg.on_bad_sample, report=report, require_image=cfg.require_image,
                           image_root=cfg.image_root)
    if cfg.limit:
        samples = samples[: cfg.limit]
    if teacher is not None:  # teacher answer ids (genrecal data teacher-answers) of another teacher are not used
        samples, _ = keep_matching_ids(samples, teacher.tokenizer)
    max_length = cfg.max_length or default_max_length(student, teacher)
    samples = usable_samples(samples, student, teacher, max_length, cfg.on_bad_sample, report, progress)
    recal = None
    if cfg.method == "genrecal":
        recal = Recalibrator.from_models(teacher.model, student.model, student.family.name,
                                         cfg.recal_depth, cfg.recal_init)
    return Prepared(student, teacher, recal, samples, report, max_length)


def check_run_dir(cfg: DistillConfig, out: Path, ckpt_root: Path, data: dict | None = None,
                  say=None) -> Path | None:
    """Refuse to overwrite a run by accident, or to resume it with different settings or different
    data; returns the checkpoint to resume from (None: a fresh run): the newest whole one, with a
    note through `say` for each damaged one skipped (checkpoint.resumable_checkpoint).

    data: the fingerprint of cfg.data now (genrecal.data.fingerprint), compared with the checkpoint's."""
    say = say or (lambda line: print(line, file=sys.stderr))
    latest = latest_checkpoint(ckpt_root)
    saved = out / RUN_CONFIG
    if has_checkpoints(ckpt_root) and not cfg.resume:
        held = f"checkpoint {latest.name}" if latest is not None else f"checkpoints in {ckpt_root}"
        raise ConfigError(f"{out} already holds a run ({held}); pass --resume to continue "
                          "it, or choose another --out")
    if cfg.resume and has_checkpoints(ckpt_root) and saved.exists():
        old = json.loads(saved.read_text())
        new = json.loads(json.dumps(cfg.to_dict(), default=list))
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(DistillConfig)}, default=list))
        # a key the saved run lacks was added to genrecal later: that run used its default
        diff = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k, defaults[k]) != new[k])
        if diff:
            raise ConfigError(f"--resume with settings that differ from the run in {out}: {', '.join(diff)}")
    if not cfg.resume or not has_checkpoints(ckpt_root):
        return None
    ckpt, damaged = resumable_checkpoint(ckpt_root)
    if ckpt is None:
        raise CheckpointError(f"no complete checkpoint to resume in {ckpt_root}: {'; '.join(damaged)}. Start the "
                              "run again with another --out (or move the checkpoints away)")
    if damaged:
        say(f"warning: {'; '.join(damaged)}: resuming from {ckpt.name}, the newest whole checkpoint")
    check_same_data(cfg, ckpt, data)
    return ckpt


def check_same_data(cfg: DistillConfig, ckpt: Path, data: dict | None) -> None:
    """Refuse to resume on data whose files changed since `ckpt` was written (unless --allow-data-change)."""
    recorded = load_data_record(ckpt)
    if data is None or recorded is None or recorded.get("sha256") == data["sha256"] or cfg.allow_data_change:
        return
    names = changed_files(recorded, data)
    raise DataChangedError(
        f"--data {cfg.data} changed since checkpoint {ckpt.name} was written ({', '.join(names) or 'its files'} "
        f"differ{'s' if len(names) == 1 else ''}): resuming would continue the run on other data. Put the "
        "original data back, or pass --allow-data-change to resume on the new data anyway")


def check_one_stage_per_launch(acc: Accelerator, stages: list[str]) -> None:
    """FSDP/DeepSpeed wrap the model once per process: a launch there trains one stage (`--stop-after`)."""
    if acc.distributed_type in SHARDED and len(stages) > 1:
        raise ConfigError(f"under {acc.distributed_type.value} each launch trains one stage, and this one would "
                          f"train {', '.join(stages)}: add --stop-after {stages[0]}, then relaunch with --resume "
                          "(and --stop-after for the next stage)")
