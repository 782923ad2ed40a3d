"""The training loop: a short loop over stages; the losses live in `objective.py`.

Runs under Hugging Face Accelerate (`accelerate launch -m genrecal.cli distill ...` for several
processes/GPUs). Data order is a pure function of (seed, global step, rank), so a resumed run and a
run split over processes see exactly the same micro-batches.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from genrecal.data.samples import SkipReport, load_samples
from genrecal.distill import outputs
from genrecal.distill.checkpoint import Progress, latest_checkpoint, load_progress, restore, save_checkpoint
from genrecal.distill.config import ConfigError, DistillConfig
from genrecal.distill.models import LoadedVLM, load_vlm
from genrecal.distill.objective import DistillObjective, teacher_features
from genrecal.distill.pairs import batch_of, encode_pairs
from genrecal.distill.recalibrator import Recalibrator
from genrecal.distill.stages import build_stage, set_trainable


class TokenizerMismatchError(ConfigError):
    """`kd` needs one shared tokenizer."""


def micro_batch(n: int, global_step: int, cfg: DistillConfig, rank: int, world: int, k: int) -> list[int]:
    """Sample indices of micro-batch k on `rank` at `global_step` (epochs reshuffle with seed+epoch)."""
    gbs = cfg.batch_size * cfg.grad_accum * world
    if n < gbs:
        raise ConfigError(f"only {n} usable samples for a global batch of {gbs}")
    per_epoch = n // gbs
    epoch, pos = divmod(global_step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    chunk = order[pos * gbs:(pos + 1) * gbs]
    m = rank * cfg.grad_accum + k
    return chunk[m * cfg.batch_size:(m + 1) * cfg.batch_size].tolist()


def lr_lambda(cfg: DistillConfig, steps: int):
    """Linear warmup, then linear decay from lr to min_lr (as multipliers of lr)."""
    warm = max(1, int(round(cfg.warmup * steps)))
    floor = cfg.min_lr / cfg.lr

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, steps - warm)
        return 1.0 - (1.0 - floor) * min(1.0, frac)
    return f


def check_kd_tokenizers(student, teacher) -> None:
    if student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise TokenizerMismatchError(
            "--method kd needs teacher and student to share one tokenizer, and these differ "
            f"({len(teacher.tokenizer)} vs {len(student.tokenizer)} tokens). Use --method genrecal "
            "(GenRecal recalibrates features across vocabularies) or --method uld.")


def prepare(cfg: DistillConfig, progress: bool = True):
    """Load models and data; returns everything the loop needs."""
    student = load_vlm(cfg.student, "student", cfg.trust_remote_code)
    needs_teacher = cfg.method != "sft"
    teacher = load_vlm(cfg.teacher, "teacher", cfg.trust_remote_code) if needs_teacher else None
    if cfg.method == "kd":
        check_kd_tokenizers(student, teacher)
    report = SkipReport()
    samples = load_samples(cfg.data, on_bad=cfg.on_bad_sample, report=report, require_image=cfg.require_image)
    if cfg.limit:
        samples = samples[: cfg.limit]
    pairs = encode_pairs(samples, student, teacher, cfg.max_length, cfg.on_bad_sample, report, progress)
    if teacher is not None:
        for p in teacher.model.parameters():
            p.requires_grad_(False)
    recal = None
    if cfg.method == "genrecal":
        recal = Recalibrator.from_models(teacher.model, student.model, student.family.name,
                                         cfg.recal_depth, cfg.recal_init)
    return student, teacher, recal, pairs, report


RUN_CONFIG = "run_config.json"
# fields that may change between a run and its resume; everything else must match
RESUMABLE_CHANGES = {"resume", "dry_run", "checkpoint_every", "keep_checkpoints"}


def _check_run_dir(cfg: DistillConfig, out: Path, ckpt_root: Path):
    """Refuse to overwrite a run by accident, or to resume it with different settings."""
    latest = latest_checkpoint(ckpt_root)
    saved = out / RUN_CONFIG
    if latest is not None and not cfg.resume:
        raise ConfigError(f"{out} already holds a run (checkpoint {latest.name}); pass --resume to continue "
                          "it, or choose another --out")
    if cfg.resume and latest is not None and saved.exists():
        old = json.loads(saved.read_text())
        new = json.loads(json.dumps(cfg.to_dict(), default=list))
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(DistillConfig)}, default=list))
        # a key the saved run lacks was added to genrecal later: that run used its default
        diff = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k, defaults[k]) != new[k])
        if diff:
            raise ConfigError(f"--resume with settings that differ from the run in {out}: {', '.join(diff)}")
    return latest if cfg.resume else None


@dataclass
class Run:
    """What every stage of one run shares."""

    acc: Accelerator
    cfg: DistillConfig
    student: LoadedVLM
    teacher: LoadedVLM | None
    recal: Recalibrator | None
    pairs: list
    ckpt_root: Path
    progress: bool

    @property
    def modules(self) -> dict:
        return {"student": self.student.model, "recal": self.recal}

    @property
    def pads(self) -> tuple[int, int | None]:
        return self.student.tokenizer.pad_token_id, (self.teacher.tokenizer.pad_token_id if self.teacher else None)


def train(cfg: DistillConfig, progress: bool = True) -> Path:
    set_seed(cfg.seed)
    acc = Accelerator(cpu=not torch.cuda.is_available(),
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    out = Path(cfg.out)
    resume_from = _check_run_dir(cfg, out, out / "checkpoints")
    student, teacher, recal, pairs, report = prepare(cfg, progress and acc.is_main_process)
    run = Run(acc, cfg, student, teacher, recal, pairs, out / "checkpoints", progress and acc.is_main_process)
    state = load_progress(resume_from) if resume_from else Progress(0, 0, 0, 0)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        outputs.truncate_log(out / outputs.LOG_NAME, state.log_lines)
        (out / RUN_CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2, default=list))
        (out / "skips.json").write_text(json.dumps(report.as_dict(), indent=2))
    acc.wait_for_everyone()
    steps_per_stage = cfg.stage_steps()
    for index, name in enumerate(cfg.stage_names()):
        if index < state.stage_index:
            continue
        resumed = resume_from if index == state.stage_index else None
        if index > state.stage_index:
            state = Progress(index, 0, state.global_step, state.log_lines)
        state = _run_stage(run, build_stage(name, cfg), steps_per_stage[name], state, resumed)
    if acc.is_main_process:
        outputs.write_outputs(out, cfg, student, recal, report)
    acc.wait_for_everyone()
    return out


def _run_stage(run: Run, stage, steps: int, state: Progress, resume_from: Path | None) -> Progress:
    acc, cfg = run.acc, run.cfg
    params = set_trainable(run.student.model, run.recal, stage)
    run.student.model.train()
    objective = DistillObjective(run.student.model, run.recal if stage.needs_recal else None, cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    if resume_from is not None and state.stage_step > 0:
        restore(resume_from, run.modules, optimizer, scheduler)
    wrapped, optimizer = acc.prepare(objective, optimizer)
    log_path = Path(cfg.out) / outputs.LOG_NAME
    bar = tqdm(total=steps, initial=state.stage_step, desc=stage.name, disable=not run.progress)
    while state.stage_step < steps:
        t0 = time.perf_counter()
        terms, mass = _optimizer_step(run, stage, wrapped, optimizer, params, state.global_step)
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scheduler.step()
        state = Progress(state.stage_index, state.stage_step + 1, state.global_step + 1, state.log_lines + 1)
        record = {"stage": stage.name, "step": state.stage_step, "global_step": state.global_step,
                  "lr": lr, **terms, "seconds": round(time.perf_counter() - t0, 4)}
        if mass is not None:
            record["attn_q_mass"] = mass
        if acc.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{terms['loss']:.3f}")
        bar.update(1)
        if state.stage_step % cfg.checkpoint_every == 0 or state.stage_step == steps:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(run.ckpt_root, state, run.modules, optimizer, scheduler, cfg.keep_checkpoints)
            acc.wait_for_everyone()
    bar.close()
    acc.free_memory(wrapped, optimizer)
    return state


def _optimizer_step(run: Run, stage, wrapped, optimizer, params, global_step: int):
    """One optimizer step over grad_accum micro-batches; returns mean loss terms over all processes."""
    acc, cfg = run.acc, run.cfg
    s_pad, t_pad = run.pads
    t_head = run.teacher.model.get_output_embeddings() if stage.needs_teacher else None
    sums: dict[str, torch.Tensor] = {}
    masses = []
    for k in range(cfg.grad_accum):
        idx = micro_batch(len(run.pairs), global_step, cfg, acc.process_index, acc.num_processes, k)
        s_batch, t_batch = batch_of(run.pairs, idx, s_pad, t_pad if stage.needs_teacher else None)
        t_feats = teacher_features(run.teacher.model, t_batch) if stage.needs_teacher else None
        sync = contextlib.nullcontext() if k == cfg.grad_accum - 1 else acc.no_sync(wrapped)
        with sync:
            terms = wrapped(stage, s_batch, t_batch, t_feats, t_head)
            acc.backward(terms["loss"] / cfg.grad_accum)
        for key, val in terms.items():
            sums[key] = sums.get(key, 0.0) + val.detach() / cfg.grad_accum
        mass = acc.unwrap_model(wrapped).attention_mass
        if mass is not None:
            masses.append(mass)
    if cfg.max_grad_norm:
        acc.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    names = sorted(sums)
    reduced = acc.reduce(torch.stack([sums[n].float() for n in names]), reduction="mean")
    terms = {n: float(v) for n, v in zip(names, reduced)}
    return terms, (sum(masses) / len(masses) if masses else None)
