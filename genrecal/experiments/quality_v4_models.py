"""The models of `genrecal-bench quality-v4`: one pretrained vision tower, a student start and two teachers.

    vision = vision_tower(cache, plan)              # Qwen2-VL `deep8` + scene probe pretraining (cached)
    start = build_start(cache, data_root, plan, vision)
    kd_teacher = build_teacher(cache, data_root, plan, vision)   # same family and tokenizer, wider, trained long

Every model shares the task's tokenizer (zoo tokenizers are deterministic in their family and corpus), so the
same-tokenizer teacher passes `--method kd`'s vocabulary check. The teacher is the student's architecture with
a wider text model (`plan.teacher_hidden`, `plan.teacher_layers`) built here from the student's config (the zoo
has no such size, and genrecal/families is not an experiment's to change); its vision tower is a copy of the
pretrained one (the projector's output layer, whose width is the text model's, starts fresh) and stays frozen.
Cached by recipe hash under `cache` like the other quality benchmarks' models.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from genrecal.experiments.quality_runs import cache_key, say, train_run, zoo_init
from genrecal.experiments.quality_v4_runs import SFT_PARTS as FROZEN_TOWER

# The teacher and the start train FROZEN_TOWER, everything but the pretrained vision tower, which all models share:
# the teacher's advantage is its wider text model and its longer training (and its steps cost far less).


def _vocab() -> tuple[str, ...]:
    from genrecal.data.scenes import vocabulary_text

    return vocabulary_text()


def _cached(cache: Path, name: str, recipe: dict, build) -> dict:
    """cache/<name>-<hash>/{model/, info.json}: build(home) -> (model dir, info) when missing."""
    home = cache / f"{name}-{cache_key(recipe)}"
    if (home / "info.json").exists():
        say(f"reusing cached {name}: {home}")
        return {**json.loads((home / "info.json").read_text()), "reused": True}
    if home.exists():
        shutil.rmtree(home)  # a leftover of an interrupted build
    home.mkdir(parents=True)
    model, info = build(home)
    os.replace(model, home / "model")
    info = {"path": str(home / "model"), "recipe": recipe, **info}
    (home / "info.json").write_text(json.dumps(info, indent=2))
    return {**info, "reused": False}


def vision_tower(cache: Path, plan) -> dict:
    """The student's zoo model (task tokenizer) with its vision tower + projector pretrained by the scenes probe
    task (`quality_scenes_vision.SCENE_TASK`, the v3 schedule that reached every probe >= 85 %)."""
    from genrecal.experiments.quality_scenes_vision import SCENE_TASK
    from genrecal.experiments.vision_pretrain import pretrain_vision

    scratch = cache / ".v4-vision-init"
    init, fingerprint = zoo_init(plan.student_family, plan.student_size, scratch, _vocab())
    recipe = {"task": "scenes", "family": plan.student_family, "size": plan.student_size, "init": fingerprint,
              "steps": plan.vision_steps, "lr": plan.vision_lr, "warmup": plan.vision_warmup, "batch_size": 64}

    def build(home: Path):
        say(f"pretraining the vision tower: {plan.vision_steps} probe steps on scenes")
        info = pretrain_vision(init, home / "vision", plan.vision_steps, batch_size=64, lr=plan.vision_lr,
                               log=lambda m: say(f"vision {m}"), task=SCENE_TASK, warmup=plan.vision_warmup)
        say("vision probes: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in info["probe_accuracy"].items()))
        return home / "vision", {"vision": info}

    try:
        return _cached(cache, "v4-vision", recipe, build)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def widen_text(src: Path, out: Path, hidden: int, layers: int, seed: int = 0) -> Path:
    """A Qwen2-VL like `src` (same tokenizer, processor and vision tower) with a text model `hidden` wide and
    `layers` deep, randomly initialised (seeded); every vision weight whose shape matches is copied from src."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(src)
    text = config.text_config
    scale = hidden // text.hidden_size
    if hidden % text.hidden_size:
        raise ValueError(f"teacher width {hidden} is not a multiple of the student's {text.hidden_size}")
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = hidden, 2 * hidden, layers
    text.layer_types = [text.layer_types[0]] * layers
    # M-RoPE sections sum to head_dim / 2: scale them with the width (same heads)
    text.rope_parameters = {**text.rope_parameters,
                            "mrope_section": [scale * s for s in text.rope_parameters["mrope_section"]]}
    config.vision_config.hidden_size = hidden  # the projector's output width is the text model's
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    source = AutoModelForImageTextToText.from_pretrained(src).state_dict()
    target = model.state_dict()
    copied = {k: v for k, v in source.items() if "visual" in k and k in target and target[k].shape == v.shape}
    model.load_state_dict(copied, strict=False)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(src).save_pretrained(out)
    say(f"teacher init: text {hidden} x {layers} layers, {len(copied)} vision tensors copied from the tower")
    return out


def _sft(role: str, start: Path, home: Path, data: Path, steps: int, plan) -> tuple[Path, float]:
    say(f"training the {role}: {steps} steps of {plan.batch_size} on {data}")
    model, seconds, _ = train_run(home / "run", False, student=str(start), data=str(data), method="sft",
                                  max_steps=steps, batch_size=plan.batch_size, lr=plan.lr, min_lr=plan.min_lr,
                                  sft_train=FROZEN_TOWER)
    os.replace(home / "run" / "train_log.jsonl", home / "train_log.jsonl")
    return model, seconds


def build_teacher(cache: Path, data: Path, plan, vision: dict) -> dict:
    """The same-tokenizer teacher: `widen_text` of the pretrained tower's model, then SFT (FROZEN_TOWER) for
    `plan.teacher_steps` on `data` (the teacher's own scenes)."""
    recipe = {"parts": FROZEN_TOWER, "vision": vision["recipe"], "hidden": plan.teacher_hidden,
              "layers": plan.teacher_layers,
              "steps": plan.teacher_steps, "data_recipe": plan.data_recipe("teacher"),
              "batch_size": plan.batch_size, "lr": plan.lr, "min_lr": plan.min_lr}

    def build(home: Path):
        init = widen_text(Path(vision["path"]), home / "init", plan.teacher_hidden, plan.teacher_layers)
        model, seconds = _sft("teacher", init, home, data, plan.teacher_steps, plan)
        return model, {"train_seconds": round(seconds, 1), "steps": plan.teacher_steps}

    return _cached(cache, "v4-teacher", recipe, build)


def build_start(cache: Path, data: Path, plan, vision: dict) -> dict:
    """The student start of every method: the pretrained tower's model, SFT (FROZEN_TOWER) for
    `plan.pretrain_steps` on `data` (images disjoint from every budget), until it answers in kind."""
    recipe = {"parts": FROZEN_TOWER, "vision": vision["recipe"], "steps": plan.pretrain_steps,
              "data_recipe": plan.data_recipe("pretrain"), "batch_size": plan.batch_size, "lr": plan.lr,
              "min_lr": plan.min_lr}

    def build(home: Path):
        model, seconds = _sft("student start", Path(vision["path"]), home, data, plan.pretrain_steps, plan)
        return model, {"train_seconds": round(seconds, 1), "steps": plan.pretrain_steps}

    return _cached(cache, "v4-start", recipe, build)
