"""Pretrain a VLM's vision encoder and projector on labelled renders, before any VLM training.

Real teachers and students start from a pretrained vision encoder (CLIP, SigLIP, InternViT); the
zoo's towers start random, and a tower trained only through the language loss learns colour but
not shape on easy-vqa (measured: teacher shape accuracy 36 %, below the question-only prior). This
is the stand-in: the model's own `get_image_features` (vision tower + projector, in the family's
image-token scheme), mean-pooled over image tokens, feeds two linear probes (shape: 3 classes,
colour: 8) trained with cross-entropy on images drawn by `genrecal.data.shapes`. The probes are
dropped; the saved model is the same architecture, loadable with `from_pretrained`.

    pretrain_vision("zoo/llava-base", "out/llava-base-vision", steps=1500)

The probe task is a parameter (`ProbeTask`): the default is the single-shape one above; the scenes
benchmark passes its own (`genrecal.experiments.quality_scenes_vision.SCENE_TASK`: per-object attributes,
count and relations, read by a linear probe over all image tokens).
"""
from __future__ import annotations

import inspect
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

EVAL_IMAGES = 512
EVAL_SEED_OFFSET = 10**6  # held-out renders: a seed no training batch uses


@dataclass(frozen=True)
class ProbeTask:
    """What the linear probes predict, from which features.

    batch(processor, rng, n) -> (processor inputs, labels); features(model, inputs) -> [n, width];
    loss(logits, labels) -> scalar; accuracy(logits, labels) -> {attribute: share right}."""

    n_out: int
    batch: Callable
    features: Callable
    loss: Callable
    accuracy: Callable


def _batch(processor, rng: random.Random, n: int):
    from genrecal.data.shapes import COLORS, SHAPES, draw

    colors = list(COLORS)
    images, shapes, cols = [], [], []
    for _ in range(n):
        shape, color = rng.choice(SHAPES), rng.choice(colors)
        images.append(draw(shape, color, rng))
        shapes.append(SHAPES.index(shape))
        cols.append(colors.index(color))
    # one list per sample: idefics3/smolvlm read a flat list as ONE sample of N images
    inputs = processor.image_processor(images=[[im] for im in images], return_tensors="pt")
    return dict(inputs), (torch.tensor(shapes), torch.tensor(cols))


def image_tokens(model: nn.Module, inputs: dict) -> list[torch.Tensor]:
    """Per image, the model's projected image tokens [tokens, hidden] (its `get_image_features`)."""
    get = model.model.get_image_features
    accepted = set(inspect.signature(get).parameters)
    out = get(**{k: v for k, v in inputs.items() if k in accepted})
    feats = getattr(out, "pooler_output", out)
    if isinstance(feats, torch.Tensor) and feats.dim() == 2:  # one pooled vector per image
        feats = feats.unsqueeze(1)
    return [f.reshape(-1, f.shape[-1]).float() for f in feats]


def image_features(model: nn.Module, inputs: dict) -> torch.Tensor:
    """(n_images, hidden) : the model's projected image tokens, mean-pooled per image."""
    return torch.stack([t.mean(0) for t in image_tokens(model, inputs)])


def vision_params(model: nn.Module) -> list[nn.Parameter]:
    from genrecal.distill.stages import student_param_groups

    groups = student_param_groups(model)
    return groups["vision"] + groups["projector"]


def _shape_color_loss(logits: torch.Tensor, labels) -> torch.Tensor:
    shapes, colors = labels
    return nn.functional.cross_entropy(logits[:, :3], shapes) + nn.functional.cross_entropy(logits[:, 3:], colors)


def _shape_color_accuracy(logits: torch.Tensor, labels) -> dict:
    shapes, colors = labels
    return {"shape": round((logits[:, :3].argmax(1) == shapes).float().mean().item(), 4),
            "color": round((logits[:, 3:].argmax(1) == colors).float().mean().item(), 4)}


SHAPE_COLOR_TASK = ProbeTask(3 + 8, _batch, image_features, _shape_color_loss, _shape_color_accuracy)
"""One easy-vqa-style shape per image; probes for its shape (3) and colour (8) on mean-pooled tokens."""


def _accuracy(model, probes, processor, seed: int, task: ProbeTask) -> dict:
    inputs, labels = task.batch(processor, random.Random(seed + EVAL_SEED_OFFSET), EVAL_IMAGES)
    model.eval()
    with torch.no_grad():
        logits = probes(task.features(model, inputs))
    model.train()
    return task.accuracy(logits, labels)


def lr_factor(step: int, steps: int, warmup: int = 0) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): (step + 1) / warmup during the warmup,
    then linear decay from 1 to a floor of 0.1 over the remaining steps (warmup 0: 1 - step / steps)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.1, 1 - (step - warmup) / max(1, steps - warmup))


def pretrain_vision(model_dir: str | Path, out_dir: str | Path, steps: int, batch_size: int = 64,
                    lr: float = 1e-3, seed: int = 0, log=print, role: str = "student",
                    task: ProbeTask = SHAPE_COLOR_TASK, warmup: int = 0) -> dict:
    """Train vision tower + projector of the VLM in model_dir for `steps` batches; save it to out_dir.
    The lr rises linearly over the first `warmup` steps, then decays linearly to 0.1 x `lr` (lr_factor).

    Returns {"steps", "batch_size", "seconds", "probe_accuracy": {attribute: share}} where the accuracy
    is the linear probes' on held-out renders (default task: shape and colour, chance 1/3 and 1/8)."""
    from genrecal.distill.models import load_vlm

    torch.manual_seed(seed)
    vlm = load_vlm(str(model_dir), role)  # "teacher" also admits teacher-only families
    model, processor = vlm.model, vlm.processor
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    params = vision_params(model)
    for p in params:
        p.requires_grad_(True)
    with torch.no_grad():
        width = task.features(model, task.batch(processor, random.Random(seed), 1)[0]).shape[-1]
    probes = nn.Linear(width, task.n_out)
    opt = torch.optim.AdamW(params + list(probes.parameters()), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup))
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        inputs, labels = task.batch(processor, rng, batch_size)
        loss = task.loss(probes(task.features(model, inputs)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            log(f"vision pretraining step {step}/{steps}: loss {loss.item():.3f}")
    seconds = time.perf_counter() - t0
    accuracy = _accuracy(model, probes, processor, seed, task)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup": warmup, "seconds": round(seconds, 1),
            "probe_accuracy": accuracy}
