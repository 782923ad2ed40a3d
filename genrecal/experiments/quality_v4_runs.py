"""The parts of `genrecal-bench quality-v4`: data sets, scoring with the answers-in-kind rate, the prior, and one
training run (spec -> child process -> result file; a finished run with the same key is reused).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from genrecal.experiments.quality_runs import cache_key, train_run
from genrecal.experiments.quality_scenes_runs import peak_rss_mb, reuse_or_run, step_stats
from genrecal.experiments.quality_v4_plan import KIND_WEIGHTS, V4Plan

SEEDS = {"teacher": 1, "pretrain": 2, "b1": 3, "test": 4, "b2-prompts": 6}
"""Scene generator seed per data set (+ 10 x plan.data_seed): disjoint scenes, the test ones held out."""
SFT_PARTS = ("layers", "norm", "embed", "head", "projector")
"""What every method trains (the vision tower stays frozen, the paper's default)."""


# ---------------------------------------------------------------- data
def write_data(root: Path, name: str, plan: V4Plan) -> Path:
    """root/<name>-<hash>/data.json: the plan's scenes for data set `name` (see V4Plan.data_recipe); reused."""
    from genrecal.data.scenes import write_scenes

    recipe = plan.data_recipe(name)
    out = root / f"{name}-{cache_key(recipe)}"
    if not (out / "data.json").exists():
        write_scenes(out, recipe["images"], plan.questions_per_image, seed=SEEDS[name] + 10 * plan.data_seed,
                     kind_weights=KIND_WEIGHTS, objects=plan.objects)
    if not recipe.get("shuffled"):
        return out / "data.json"
    shuffled = out / "shuffled.json"
    if not shuffled.exists():
        shuffled.write_text(json.dumps(shuffle_images(json.loads((out / "data.json").read_text()), plan.data_seed)))
    return shuffled


def shuffle_images(records: list[dict], seed: int) -> list[dict]:
    """The records with their images permuted among them (seeded): every question keeps its answer, and its image
    is another scene's, so the image tells nothing about the answer."""
    import random

    images = [r["image"] for r in records]
    random.Random(seed).shuffle(images)
    return [{**r, "image": im} for r, im in zip(records, images)]


def items(data: Path) -> list[tuple[str, dict, str]]:
    """(question, truth, image path) of a scenes data file."""
    records = json.loads(data.read_text())
    return [(r["conversations"][0]["value"].replace("<image>", "").strip(), r["truth"], str(data.parent / r["image"]))
            for r in records]


def prior(train: Path, test: Path) -> dict:
    """The question-only prior of `test` from the labels of `train` (genrecal.data.prior.scene_prior)."""
    from genrecal.data.prior import scene_prior

    return scene_prior([(q, t) for q, t, _ in items(train)], [(q, t) for q, t, _ in items(test)])


def in_kind(prediction: str, kind: str) -> bool:
    """The answer names at least one word of the asked kind's vocabulary (a number for count, a colour...)."""
    from genrecal.data.scenes_scoring import parse

    return any(parse(prediction, kind).values())


def score(model_dir: str, test: list[tuple[str, dict, str]], max_new_tokens: int, desc: str = "eval") -> dict:
    """Held-out accuracy overall and per kind, and the share of answers in kind (overall and per kind)."""
    from genrecal.data.scenes_scoring import score_answer
    from genrecal.distill.evaluate import accuracy

    res = accuracy(model_dir, test, progress=False, desc=desc, max_new_tokens=max_new_tokens, correct=score_answer)
    hits: dict[str, list[bool]] = {}
    kind_ok: dict[str, list[bool]] = {}
    for (_, truth, _), pred in zip(test, res["predictions"]):
        hits.setdefault(truth["kind"], []).append(score_answer(pred, truth))
        kind_ok.setdefault(truth["kind"], []).append(in_kind(pred, truth["kind"]))
    share = {k: round(sum(v) / len(v), 4) for k, v in sorted(kind_ok.items())}
    return {"accuracy": res["accuracy"], "n": res["n"], "by_kind": {k: round(sum(v) / len(v), 4)
                                                                    for k, v in sorted(hits.items())},
            "in_kind": sum(sum(v) for v in kind_ok.values()) / max(1, res["n"]), "in_kind_by_kind": share,
            "examples": res["examples"][:4]}


def scored(model: dict, test_data: Path, plan: V4Plan, desc: str) -> dict:
    """`score` of a cached model, itself cached beside the model (keyed by the test set)."""
    path = Path(model["path"]).parent / f"scores-{test_data.parent.name}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = score(model["path"], items(test_data), plan.max_new_tokens, desc)
    path.write_text(json.dumps(out, indent=2))
    return out


# ---------------------------------------------------------------- one run
def run(spec: dict) -> dict:
    """Train + score the run `spec` (see quality_v4.spec) in its own process, or reuse its finished result."""
    return reuse_or_run(spec, child=_child)


def _child(spec: dict, result: str) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    run_dir = Path(spec["run_dir"])
    t0 = time.perf_counter()
    student, _, _ = train_run(run_dir, False, **spec["fields"])
    seconds = time.perf_counter() - t0
    peak_mb = peak_rss_mb()  # training only: scoring comes after
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    scores = score(str(student), items(Path(spec["test"])), spec["max_new_tokens"], spec["name"])
    record = {**{k: spec[k] for k in ("name", "method", "regime", "seed", "steps", "batch_size", "key")},
              **scores, "train_seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1),
              **step_stats(run_dir / "train_log.jsonl"), "run_dir": str(run_dir)}
    shutil.rmtree(run_dir / "student", ignore_errors=True)  # 10 MB each; the result is what the report reads
    Path(result).write_text(json.dumps(record, indent=2))
