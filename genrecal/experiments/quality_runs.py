"""The quality benchmark's parts: data splits, cached teacher/student, one training run, scoring.

`genrecal.experiments.quality` composes them; see its docstring for the benchmark itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from genrecal.experiments.quality_plan import Plan

ALL_PARTS = ("layers", "norm", "embed", "head", "projector", "vision")
RECIPE_VERSION = 2  # bump when data or training code changes what a cached model would be


def say(msg: str) -> None:
    print(f"[quality] {msg}", flush=True)


def cache_key(recipe: dict) -> str:
    """Short stable hash of a JSON-able recipe (sorted keys), for cache dir names."""
    blob = json.dumps({"recipe_version": RECIPE_VERSION, **recipe}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def teacher_recipe(plan: Plan) -> dict:
    keys = ("teacher_family", "teacher_size", "teacher_vision_steps", "teacher_images",
            "teacher_questions_per_image", "teacher_question_mix", "teacher_steps", "batch_size", "lr", "min_lr",
            "data_seed")
    return {k: getattr(plan, k) for k in keys}


def pretrain_recipe(plan: Plan) -> dict:
    keys = ("student_family", "student_size", "student_vision_steps", "pretrain_images", "pretrain_steps",
            "batch_size", "lr", "min_lr", "data_seed")
    return {k: getattr(plan, k) for k in keys}


# ---------------------------------------------------------------- data
def split_easy_vqa(root: Path, plan: Plan) -> dict[str, Path]:
    """easy-vqa train split BY IMAGE into disjoint pretraining and budget sets (LLaVA JSON files)."""
    from genrecal.data import write_easy_vqa

    full = root / "easy_vqa_train"
    if not (full / "data.json").exists():
        write_easy_vqa(full, split="train", seed=plan.data_seed)
    records = json.loads((full / "data.json").read_text())
    images = sorted({r["image"] for r in records})
    random.Random(plan.data_seed).shuffle(images)
    if plan.pretrain_images + plan.budget_images > len(images):
        raise ValueError(f"pretrain_images + budget_images > {len(images)} easy-vqa train images")
    parts = {"pretrain": set(images[:plan.pretrain_images]),
             "budget": set(images[plan.pretrain_images:plan.pretrain_images + plan.budget_images])}
    limits = {"pretrain": plan.pretrain_steps * plan.batch_size, "budget": plan.budget_samples}
    paths = {}
    for name, chosen in parts.items():
        recs = [r for r in records if r["image"] in chosen]  # records are already in a seeded shuffle
        path = full / f"{name}-{cache_key({'plan': asdict(plan), 'part': name})}.json"
        if not path.exists():
            path.write_text(json.dumps(recs[:limits[name]]))
        paths[name] = path
    return paths


def test_items(plan: Plan) -> list[tuple[str, str, str]]:
    from genrecal.data import load_easy_vqa_questions

    return [(q, a, str(p)) for q, a, p in load_easy_vqa_questions("test", limit=plan.test_questions, seed=0)]


def answer_kind(answer: str) -> str:
    from genrecal.data.shapes import SHAPES

    return "yes_no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "color"


def question_only_prior(items: list[tuple[str, str, str]]) -> dict:
    """Accuracy of answering each test question with its most frequent easy-vqa TRAIN answer, image unseen.

    easy-vqa's yes/no questions are mostly "no" (mostly "yes" when negated), so a model that ignores
    the image already scores here; only accuracy above it comes from looking at the image.
    """
    from collections import Counter, defaultdict

    import easy_vqa

    counts: dict[str, Counter] = defaultdict(Counter)
    for q, a in zip(*easy_vqa.get_train_questions()[:2]):
        counts[q][a] += 1
    hits = {}
    for q, a, _ in items:
        hits.setdefault(answer_kind(a), []).append(counts[q].most_common(1)[0][0] == a if q in counts else False)
    return _combine({k: (sum(v) / len(v), len(v)) for k, v in hits.items()})


def _combine(by_kind: dict[str, tuple[float, int]]) -> dict:
    n = sum(c for _, c in by_kind.values())
    return {"accuracy": sum(acc * c for acc, c in by_kind.values()) / n,
            "by_kind": {k: round(acc, 4) for k, (acc, _) in sorted(by_kind.items())}}


def prediction_kind(prediction: str) -> str | None:
    """yes_no / shape / color for a word of easy-vqa's answer vocabulary, None for anything else."""
    from genrecal.data.scoring import normalize_answer
    from genrecal.data.shapes import COLORS, SHAPES

    word = normalize_answer(prediction)
    return "yes_no" if word in ("yes", "no") else "shape" if word in SHAPES else "color" if word in COLORS else None


def score(model_dir: str, items: list[tuple[str, str, str]], progress: bool = False, desc: str = "eval") -> dict:
    """Greedy exact-match accuracy overall and per answer kind (yes/no, shape, colour), and `in_kind`: the
    share of answers that are a word of the asked kind (a shape for a shape question...), right or wrong:
    whether the model answers in the right vocabulary at all."""
    from genrecal.distill.evaluate import accuracy

    kinds: dict[str, list] = {}
    for it in items:
        kinds.setdefault(answer_kind(it[1]), []).append(it)
    results = {k: accuracy(model_dir, sub, progress=progress, desc=f"{desc} {k}") for k, sub in kinds.items()}
    out = _combine({k: (r["accuracy"], len(kinds[k])) for k, r in results.items()})
    in_kind = {k: sum(prediction_kind(p) == k for p in r["predictions"]) / len(kinds[k]) for k, r in results.items()}
    out["in_kind"] = _combine({k: (v, len(kinds[k])) for k, v in in_kind.items()})
    return out


# ---------------------------------------------------------------- training
def train_run(run_dir: Path, progress: bool, **cfg_fields) -> tuple[Path, float, dict]:
    """One fresh training run in run_dir; returns (student dir, seconds, the DistillConfig as a dict)."""
    from genrecal.distill.config import DistillConfig
    from genrecal.distill.trainer import train

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a leftover of an interrupted benchmark: start that run again
    cfg = DistillConfig(out=str(run_dir), checkpoint_every=10**9, keep_checkpoints=1, **cfg_fields)
    t0 = time.perf_counter()
    out = train(cfg, progress=progress)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # only the final student is needed
    return out / "student", seconds, cfg.to_dict()


def zoo_init(family: str, size: str, out: Path, extra_text: tuple[str, ...] = ()) -> tuple[Path, str]:
    """Build the untrained zoo model into `out` (extra_text: see zoo.build); returns (dir, fingerprint of its
    weights + tokenizer).

    The fingerprint goes into cache keys, so a cached model is not reused after the zoo changes."""
    from genrecal import zoo

    path = zoo.build_to_dir(family, out, size=size, seed=0, extra_text=extra_text)
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        if (path / name).exists():
            digest.update((path / name).read_bytes())
    return path, digest.hexdigest()[:12]


def cached_model(cache: Path, name: str, recipe: dict, family: str, size: str, build, vision_steps: int = 0,
                 role: str = "student", extra_text: tuple[str, ...] = (), task=None,
                 vision_schedule: dict | None = None) -> dict:
    """cache/<name>-<hash>/ holds model/, info.json and train_log.jsonl.

    The untrained zoo model (its tokenizer also trained on `extra_text`) first gets `vision_steps` batches
    of vision pretraining on probe `task` (None: vision_pretrain's default; 0 steps: none; `vision_schedule`:
    pretrain_vision's lr / warmup, part of the hash), then
    `build(start_dir, run_dir)` -> (student dir, seconds, steps, samples); the hash covers `recipe` and
    the untrained zoo model it starts from."""
    scratch = cache / f".{name}-init"
    init, fingerprint = zoo_init(family, size, scratch, extra_text)
    recipe = {**recipe, **({"vision_schedule": vision_schedule} if vision_schedule else {}), "init": fingerprint}
    home = cache / f"{name}-{cache_key(recipe)}"
    info_path = home / "info.json"
    if info_path.exists():
        shutil.rmtree(scratch, ignore_errors=True)
        say(f"reusing cached {name}: {home}")
        return {**json.loads(info_path.read_text()), "reused": True}
    home.mkdir(parents=True, exist_ok=True)
    start, vision = _vision_first(init, home / "vision", vision_steps, role, task, **(vision_schedule or {}))
    student, seconds, steps, samples = build(start, home / "run")
    seconds += vision["seconds"] if vision else 0.0
    os.replace(student, home / "model")
    os.replace(home / "run" / "train_log.jsonl", home / "train_log.jsonl")
    for leftover in (home / "run", home / "vision", scratch):
        shutil.rmtree(leftover, ignore_errors=True)
    info = {"path": str(home / "model"), "recipe": recipe, "train_seconds": round(seconds, 1), "steps": steps,
            "samples": samples, "vision": vision}
    info_path.write_text(json.dumps(info, indent=2))
    return {**info, "reused": False}


def _vision_first(init: Path, out: Path, steps: int, role: str, task=None, **schedule) -> tuple[Path, dict | None]:
    """Pretrain the vision encoder + projector of `init` for `steps` batches (0: skip); returns (model dir, info)."""
    if steps <= 0:
        return init, None
    from genrecal.experiments.vision_pretrain import SHAPE_COLOR_TASK, pretrain_vision

    say(f"pretraining the {role}'s vision encoder: {steps} steps on labelled renders")
    info = pretrain_vision(init, out, steps, log=lambda m: say(f"{role} {m}"), role=role,
                           task=task or SHAPE_COLOR_TASK, **schedule)
    probes = ", ".join(f"{k} {100 * v:.1f}%" for k, v in info["probe_accuracy"].items())
    say(f"{role} vision probes on held-out renders: {probes} ({info['seconds']:.0f} s)")
    return out, info


def build_teacher(cache: Path, plan: Plan, progress: bool) -> dict:
    from genrecal.data.shapes import write_shapes

    def build(start: Path, run_dir: Path):
        data = write_shapes(run_dir.parent / "shapes", plan.teacher_images, plan.teacher_questions_per_image,
                            seed=plan.data_seed + 1, kind_weights=dict(plan.teacher_question_mix))
        samples = min(plan.teacher_steps * plan.batch_size, len(json.loads((data / "data.json").read_text())))
        say(f"training the teacher: {plan.teacher_family}/{plan.teacher_size}, {plan.teacher_steps} steps on "
            f"{samples} questions about {plan.teacher_images} rendered images")
        student, seconds, _ = train_run(run_dir, progress, student=str(start), data=str(data), method="sft",
                                     max_steps=plan.teacher_steps, batch_size=plan.batch_size, lr=plan.lr,
                                     min_lr=plan.min_lr, sft_train=ALL_PARTS, limit=samples)
        shutil.rmtree(data)
        return student, seconds, plan.teacher_steps, plan.teacher_steps * plan.batch_size

    return cached_model(cache, "teacher", teacher_recipe(plan), plan.teacher_family, plan.teacher_size, build,
                        plan.teacher_vision_steps, "teacher")


def build_pretrained_student(cache: Path, plan: Plan, data: dict[str, Path], progress: bool) -> dict:
    def build(start: Path, run_dir: Path):
        say(f"pretraining the student: {plan.student_family}/{plan.student_size}, {plan.pretrain_steps} steps "
            f"on {plan.pretrain_images} easy-vqa train images (disjoint from the budget)")
        student, seconds, _ = train_run(run_dir, progress, student=str(start), data=str(data["pretrain"]),
                                     method="sft", max_steps=plan.pretrain_steps, batch_size=plan.batch_size,
                                     lr=plan.lr, min_lr=plan.min_lr, sft_train=ALL_PARTS)
        return student, seconds, plan.pretrain_steps, plan.pretrain_steps * plan.batch_size

    return cached_model(cache, "student-pretrained", pretrain_recipe(plan), plan.student_family, plan.student_size,
                        build, plan.student_vision_steps, "student")


def attention_mass(log_path: Path) -> dict | None:
    """Per GenRecal stage, the mean (and first/last-10-step means) of the logged `attn_q_mass`."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    out = {}
    for stage in ("align", "distill"):
        vals = [r["attn_q_mass"] for r in rows if r["stage"] == stage and "attn_q_mass" in r]
        if vals:
            out[f"{stage}_mean"] = sum(vals) / len(vals)
            out[f"{stage}_first10"] = sum(vals[:10]) / len(vals[:10])
            out[f"{stage}_last10"] = sum(vals[-10:]) / len(vals[-10:])
    return out or None


def uniform_mass(student: str, teacher: str, data: Path, n: int = 64) -> float:
    """The question-part attention share that UNIFORM causal attention would give, on `n` budget samples.

    The Recalibrator's answer position j sees q student-question positions and j+1 answer positions,
    so attending evenly puts q/(q+j+1) on the question part (~0.97 for a 41-token question and a
    2-token answer). The logged mass means something only next to this number."""
    from genrecal.data.samples import SkipReport, load_samples
    from genrecal.distill.models import load_vlm
    from genrecal.distill.pairs import encode_pairs

    samples = load_samples(data)[:n]
    pairs = encode_pairs(samples, load_vlm(student, "student"), load_vlm(teacher, "teacher"), 4096, "error",
                         SkipReport(), progress=False)
    shares = [p.student.answer_start / (p.student.answer_start + j + 1)
              for p in pairs for j in range(p.teacher.answer_end - p.teacher.answer_start)]
    return sum(shares) / len(shares)


def run_one(runs: Path, plan: Plan, name: str, method: str, seed: int, models: dict, data: Path,
            items: list, overrides: dict, progress: bool) -> dict:
    """Train one student from the pretrained checkpoint and score it; a finished identical run is reused."""
    from genrecal.distill.config import DistillConfig

    run_dir = runs / f"{name}-seed{seed}"
    fields = dict(student=models["start"]["path"], data=str(data), method=method, max_steps=plan.budget_steps,
                  batch_size=plan.batch_size, lr=plan.lr, min_lr=plan.min_lr, seed=seed, **overrides)
    if plan.student_parts:
        fields.update(sft_train=plan.student_parts, distill_train=plan.student_parts)
    if method != "sft":
        fields["teacher"] = models["teacher"]["path"]
    key = cache_key({"fields": fields, "teacher": models["teacher"]["recipe"], "start": models["start"]["recipe"],
                     "test_questions": plan.test_questions})
    done = run_dir / "result.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        record = json.loads(done.read_text())
        if "in_kind" not in record:  # a run recorded before answers were classified: score its student again
            again = score(str(run_dir / "student"), items, progress, f"eval {name}")
            if abs(again["accuracy"] - record["accuracy"]) > 1e-9:
                raise RuntimeError(f"{run_dir}: re-scoring gave {again['accuracy']:.4f}, the record says "
                                   f"{record['accuracy']:.4f}; delete {done} to train that run again")
            record["in_kind"] = again["in_kind"]
            done.write_text(json.dumps(record, indent=2))
        say(f"{name} seed {seed}: {100 * record['accuracy']:.1f}% (reused from {run_dir})")
        return {**record, "reused": True}
    student, seconds, cfg = train_run(run_dir, progress, **fields)
    t0 = time.perf_counter()
    scores = score(str(student), items, progress, f"eval {name}")
    record = {"name": name, "method": method, "seed": seed, "accuracy": scores["accuracy"],
              "by_kind": scores["by_kind"], "in_kind": scores["in_kind"], "train_seconds": round(seconds, 1),
              "eval_seconds": round(time.perf_counter() - t0, 1), "steps": plan.budget_steps,
              "samples": plan.budget_steps * plan.batch_size, "stage_steps": DistillConfig(**cfg).stage_steps(),
              "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
              "attention_mass": attention_mass(run_dir / "train_log.jsonl") if method == "genrecal" else None,
              "run_dir": str(run_dir), "key": key}
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    done.write_text(json.dumps(record, indent=2))
    say(f"{name} seed {seed}: {100 * record['accuracy']:.1f}% (train {seconds:.0f} s, eval {record['eval_seconds']:.0f} s)")
    return {**record, "reused": False}
