"""The training loop: a short loop over stages; the losses live in `objective.py`.

Runs under Hugging Face Accelerate (`accelerate launch -m genrecal.cli distill ...` for several
processes/GPUs): Accelerate holds the mixed precision (fp32 master weights, bf16/fp16 autocast)
and the gradient accumulation, and gathers full state dicts under FSDP/ZeRO-3 for every save.
Data order is a pure function of (seed, global step, rank), so a resumed run and a run split over
processes see exactly the same micro-batches.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from tqdm.auto import tqdm

from genrecal.distill import outputs
from genrecal.data.fingerprint import data_fingerprint
from genrecal.distill.checkpoint import (
    DISK_HINT, Progress, load_progress, module_weights, restore, save_checkpoint,
)
from genrecal.fsutil import write_text_atomic
from genrecal.artifacts.integrity import disk_full_guard
from genrecal.distill.config import DistillConfig
from genrecal.distill.devices import checkpointing_wanted, check_device_map, head_on, input_device, to_device
from genrecal.distill.diagnostics import step_record
from genrecal.distill.objective import DistillObjective, teacher_answer_inputs, teacher_features
from genrecal.distill.batches import RenderedPairs, StepOrder, batch_loader
from genrecal.distill.precision import save_dtype
from genrecal.distill.launch import (
    RUN_CONFIG, SHARDED, Prepared, check_one_stage_per_launch, check_run_dir, device_type, make_accelerator, prepare,
    run_dtype,
)
from genrecal.distill.stages import build_stage, set_trainable


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



@dataclass
class Run:
    """What every stage of one run shares."""

    acc: Accelerator
    cfg: DistillConfig
    data: Prepared
    t_head: nn.Module | None  # the frozen teacher head, on the Accelerate device
    ckpt_root: Path
    progress: bool
    data_fingerprint: dict | None = None  # recorded in every checkpoint; --resume compares it

    @property
    def modules(self) -> dict:
        return {"student": self.data.student.model, "recal": self.data.recal}

    @property
    def pads(self) -> tuple[int, int | None]:
        student, teacher = self.data.student, self.data.teacher
        return student.tokenizer.pad_token_id, (teacher.tokenizer.pad_token_id if teacher else None)

    @property
    def vocab(self) -> tuple[int, int | None]:
        teacher = self.data.teacher
        return len(self.data.student.tokenizer), (len(teacher.tokenizer) if teacher else None)


def _last_stage(cfg: DistillConfig) -> int:
    """Index of the last stage this launch may run (--stop-after, else the run's last)."""
    names = cfg.stage_names()
    return names.index(cfg.stop_after) if cfg.stop_after else len(names) - 1


def launch_stages(cfg: DistillConfig, state: Progress) -> list[str]:
    """The stages this launch trains: from the checkpoint's stage through --stop-after (a stage
    an earlier launch finished is not counted)."""
    names, steps = cfg.stage_names(), cfg.stage_steps()
    todo = list(names[state.stage_index:_last_stage(cfg) + 1])
    if todo and state.stage_step >= steps[todo[0]]:
        todo = todo[1:]
    return todo


def train(cfg: DistillConfig, progress: bool = True) -> Path:
    """Run (or resume) the stages up to --stop-after; the last stage writes OUT/student etc."""
    set_seed(cfg.seed)
    out = Path(cfg.out)
    fingerprint = data_fingerprint(cfg.data)
    resume_from = check_run_dir(cfg, out, out / "checkpoints", fingerprint, say=_on_main(_say))
    state = load_progress(resume_from) if resume_from else Progress(0, 0, 0, 0)
    dtype = run_dtype(cfg)
    acc = make_accelerator(cfg, dtype)
    check_device_map(cfg.teacher_device_map, device_type(), acc.num_processes)
    check_one_stage_per_launch(acc, launch_stages(cfg, state))
    data = prepare(cfg, dtype, acc.device, progress and acc.is_main_process)
    for vlm in (data.student, data.teacher):
        if vlm is not None and vlm.pad_note and acc.is_main_process:
            _say(f"note: {vlm.pad_note}")
    if checkpointing_wanted(cfg.gradient_checkpointing, device_type()):
        data.student.model.activation_checkpointing_enable()
    t_head = None if data.teacher is None else head_on(data.teacher.model.get_output_embeddings(), acc.device)
    run = Run(acc, cfg, data, t_head, out / "checkpoints", progress and acc.is_main_process, fingerprint)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with disk_full_guard(out, "the run's log and settings", DISK_HINT):
            outputs.truncate_log(out / outputs.LOG_NAME, state.log_lines)
            write_text_atomic(out / RUN_CONFIG, json.dumps(cfg.to_dict(), indent=2, default=list))
            write_text_atomic(out / "skips.json", json.dumps(data.report.as_dict(), indent=2))
    acc.wait_for_everyone()
    names, steps_per_stage, last = cfg.stage_names(), cfg.stage_steps(), _last_stage(cfg)
    weights = None
    for index, name in enumerate(names[:last + 1]):
        if index < state.stage_index:
            continue
        resumed = resume_from if index == state.stage_index else None
        if index > state.stage_index:
            state = Progress(index, 0, state.global_step, state.log_lines)
        state, weights = _run_stage(run, build_stage(name, cfg), steps_per_stage[name], state, resumed)
    if acc.is_main_process and weights is not None and last == len(names) - 1:
        outputs.write_outputs(out, cfg, data.student, data.recal, data.report, weights,
                              save_dtype(cfg.save_dtype, data.student.checkpoint_dtype))
    acc.wait_for_everyone()
    return out


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _on_main(say):
    """`say` on the main process only (every rank checks the run dir; one tells the user)."""
    return say if os.environ.get("RANK", "0") == "0" else (lambda line: None)


def _gathered(run: Run, wrapped) -> dict[str, torch.Tensor]:
    """Full `student.` / `recal.` state dict: gathered from every process (a collective under
    FSDP/ZeRO-3, so every rank calls it); modules this stage did not wrap are read directly."""
    weights = dict(run.acc.get_state_dict(wrapped))
    for prefix, module in run.modules.items():
        if module is not None and not any(k.startswith(prefix + ".") for k in weights):
            weights.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return weights


def _checkpoint(run: Run, wrapped, state: Progress, optimizer, scheduler) -> None:
    weights = _gathered(run, wrapped)
    sharded = run.acc.distributed_type in SHARDED  # per-rank optimizer shards: stage-end checkpoints only
    if run.acc.is_main_process:
        save_checkpoint(run.ckpt_root, state, weights, None if sharded else optimizer, scheduler,
                        run.cfg.keep_checkpoints, run.data_fingerprint)
    run.acc.wait_for_everyone()


def _run_stage(run: Run, stage, steps: int, state: Progress, resume_from: Path | None):
    """Train one stage from `state`; returns (progress, the full weights at its end)."""
    acc, cfg = run.acc, run.cfg
    params = set_trainable(run.data.student.model, run.data.recal, stage)
    if resume_from is not None and state.stage_step >= steps:  # finished by an earlier launch
        restore(resume_from, run.modules)
        return state, module_weights(run.modules)
    run.data.student.model.train()
    batches = _batches(run, stage, state, steps)
    objective = DistillObjective(run.data.student.model, run.data.recal if stage.needs_recal else None, cfg,
                                run.vocab)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    if resume_from is not None and state.stage_step > 0:
        restore(resume_from, run.modules, optimizer, scheduler)
    wrapped, optimizer = acc.prepare(objective, optimizer)
    sharded = acc.distributed_type in SHARDED
    log_path = Path(cfg.out) / outputs.LOG_NAME
    bar = tqdm(total=steps, initial=state.stage_step, desc=stage.name, disable=not run.progress)
    while state.stage_step < steps:
        t0 = time.perf_counter()
        terms, diagnostics = _optimizer_step(run, stage, wrapped, optimizer, state.global_step, batches)
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        scheduler.step()
        state = Progress(state.stage_index, state.stage_step + 1, state.global_step + 1, state.log_lines + 1)
        record = {"stage": stage.name, "step": state.stage_step, "global_step": state.global_step,
                  "lr": lr, **terms, **diagnostics, "seconds": round(time.perf_counter() - t0, 4)}
        if acc.is_main_process:
            with disk_full_guard(log_path.parent, log_path.name, DISK_HINT), log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{terms['loss']:.3f}")
        bar.update(1)
        if state.stage_step == steps or (state.stage_step % cfg.checkpoint_every == 0 and not sharded):
            _checkpoint(run, wrapped, state, optimizer, scheduler)
    bar.close()
    weights = _gathered(run, wrapped)
    acc.free_memory(wrapped, optimizer)
    return state, weights


def _batches(run: Run, stage, state: Progress, steps: int):
    """This rank's (student, teacher) micro-batches for the rest of the stage, rendered lazily."""
    teacher = run.data.teacher if stage.needs_teacher else None
    data = RenderedPairs(run.data.samples, run.data.student, teacher, run.data.max_length)
    order = StepOrder(len(data), run.cfg, run.acc.process_index, run.acc.num_processes, state.global_step,
                      steps - state.stage_step)
    s_pad, t_pad = run.pads
    return iter(batch_loader(data, order, (s_pad, t_pad if teacher else None), run.cfg.data_workers))


def _teacher_pass(run: Run, t_batch: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The teacher's batch, its final hidden states [B, L_t, d_t] and what the Recalibrator reads at its
    answer positions [B, L_t, d_t] (the states, or the answer-token embeddings), on the Accelerate device."""
    teacher = run.data.teacher.model
    t_batch = to_device(t_batch, input_device(teacher))
    feats = teacher_features(teacher, t_batch)
    answers = teacher_answer_inputs(teacher, t_batch, feats, run.cfg.recal_answer_input)
    return to_device(t_batch, run.acc.device), feats.to(run.acc.device), answers.to(run.acc.device)


def _optimizer_step(run: Run, stage, wrapped, optimizer, global_step: int, batches):
    """One optimizer step over grad_accum micro-batches (accumulated through the Accelerator);
    returns the mean loss terms over all processes and this process's diagnostics for the log (on
    diagnostic steps: `attn_q_mass`, `ar_shuffled`, `ar_shuffle_rise`; see diagnostics.py)."""
    acc, cfg = run.acc, run.cfg
    t_head = run.t_head if stage.needs_teacher else None
    keep = cfg.log_attention_mass and global_step % cfg.attn_mass_every == 0
    sums: dict[str, torch.Tensor] = {}
    masses, shuffles = [], []
    for _ in range(cfg.grad_accum):
        s_batch, t_batch = next(batches)
        t_feats = t_answer = None
        if stage.needs_teacher:
            t_batch, t_feats, t_answer = _teacher_pass(run, t_batch)
        with acc.accumulate(wrapped):
            terms = wrapped(stage, to_device(s_batch, acc.device), t_batch, t_feats, t_head, keep_attention=keep,
                            t_answer=t_answer)
            acc.backward(terms["loss"])  # Accelerate divides by grad_accum
        for key, val in terms.items():
            sums[key] = sums.get(key, 0.0) + val.detach().float() / cfg.grad_accum
        objective = acc.unwrap_model(wrapped)
        if objective.attention_mass is not None:
            masses.append(objective.attention_mass)
        if objective.shuffle is not None:
            shuffles.append(objective.shuffle)
    if not acc.sync_gradients:
        raise RuntimeError("gradient accumulation is out of step with the Accelerator")
    if cfg.max_grad_norm:
        acc.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    names = sorted(sums)
    reduced = acc.reduce(torch.stack([sums[n] for n in names]), reduction="mean")
    terms = {n: float(v) for n, v in zip(names, reduced)}
    diagnostics = {"attn_q_mass": sum(masses) / len(masses)} if masses else {}
    if keep and cfg.log_shuffle_rise and {"ar", "kl"} & set(stage.losses):
        diagnostics.update(step_record(shuffles))
    return terms, diagnostics
