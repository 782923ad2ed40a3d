"""Stages are data: which student parts train, whether the Recalibrator trains, which losses count."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from genrecal.distill.config import DistillConfig
from genrecal.families.base import text_model

TEACHER_LOSSES = {"ar", "kl", "reg", "uld", "kd"}
RECAL_LOSSES = {"ar", "kl", "reg"}
PROJECTOR_MARKERS = ("multi_modal_projector", "connector", "mlp1", "merger", "projector")
VISION_MARKERS = ("vision_tower", "vision_model", "visual", "vision")


@dataclass(frozen=True)
class Stage:
    name: str
    student_parts: tuple[str, ...]  # subset of layers, norm, embed, head, projector, vision
    train_recal: bool
    losses: tuple[str, ...]  # subset of ar, kl, reg, sft, uld, kd

    @property
    def needs_teacher(self) -> bool:
        return bool(TEACHER_LOSSES & set(self.losses))

    @property
    def needs_recal(self) -> bool:
        return bool(RECAL_LOSSES & set(self.losses))


def build_stage(name: str, cfg: DistillConfig) -> Stage:
    if name == "align":
        return Stage("align", (), True, ("ar", "kl", "reg"))
    if name == "distill":
        reg = ("reg",) if cfg.recal_train_in_distill and cfg.reg_in_distill else ()
        sft = ("sft",) if cfg.sft_in_distill else ()
        # only L_sft reaches the student's own head: without it the head gets no gradient (and DDP would
        # fail on an unused trainable parameter), so it does not train
        parts = cfg.distill_train if sft else tuple(p for p in cfg.distill_train if p != "head")
        return Stage("distill", parts, cfg.recal_train_in_distill, ("ar", "kl") + sft + reg)
    if name == "sft":
        return Stage("sft", cfg.sft_train, False, ("sft",))
    if name in ("uld", "kd"):
        return Stage(name, cfg.sft_train, False, ("sft", name))
    raise ValueError(f"unknown stage {name!r}")


def student_param_groups(student: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Student parameters by part, so stages can name what trains."""
    body = text_model(student)
    groups = {"layers": list(body.layers.parameters()), "norm": list(body.norm.parameters()),
              "embed": list(body.embed_tokens.parameters()), "head": list(student.get_output_embeddings().parameters())}
    seen = {id(p) for ps in groups.values() for p in ps}
    groups["projector"], groups["vision"] = [], []
    for name, p in student.named_parameters():
        if id(p) in seen:
            continue
        part = "projector" if any(m in name for m in PROJECTOR_MARKERS) else "vision" if any(
            m in name for m in VISION_MARKERS) else "layers"
        groups[part].append(p)
    return groups


def set_trainable(student: nn.Module, recal: nn.Module | None, stage: Stage) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze what the stage trains; returns the trainable parameters."""
    for p in student.parameters():
        p.requires_grad_(False)
    groups = student_param_groups(student)
    params = [p for part in stage.student_parts for p in groups[part]]
    if recal is not None:
        for p in recal.parameters():
            p.requires_grad_(stage.train_recal)
        if stage.train_recal:
            params += list(recal.parameters())
    unique = list({id(p): p for p in params}.values())
    for p in unique:
        p.requires_grad_(True)
    return unique
