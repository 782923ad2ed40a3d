"""`genrecal-bench quality-scenes`: distillation methods side by side on multi-object scenes, two data regimes.

    genrecal-bench quality-scenes --out scenes-out                 # the full run: 3 seeds, both regimes
    genrecal-bench quality-scenes --quick --out scenes-quick       # 1 seed, small (a `slow` test: < 10 min)

The task (genrecal.data.scenes): 64x64 scenes of 2-5 easy-vqa shapes; questions on count, colour, shape,
size, left/right/above/below and a one-sentence description; three phrasings per answer in every
training set; scored by parsing (genrecal.data.scenes_scoring) on held-out scenes, and by exact match on
easy-vqa's test split (a share of every training set is single-shape easy-vqa-style images).
0. Teacher (LLaVA, WordPiece) and student (Qwen2-VL `deep8`: 8 text layers, byte BPE) get tokenizers that
   know the task's words and vision encoders pretrained with linear probes on scenes
   (genrecal.experiments.quality_scenes_vision). The teacher then trains long on many scenes (cached);
   the student gets a short SFT pretraining on other scenes: the start of every method.
1. The regime criteria, fixed before any method comparison (`CRITERIA`), are measured and reported:
   student depth >= 4x the Recalibrator's; student probe >= 85 % per attribute; SFT with an unlimited
   budget >= 90 % of the teacher.
2. Regime (a) gold answers; regime (b) the teacher's own greedy answers to the same prompts (`genrecal
   data teacher-answers` when present). Per regime and seed, every method in `METHODS` trains the same
   samples for the same optimizer steps from the same start, each in its own process (peak RSS).
Results: OUT/quality_scenes.{json,md,png}; finished runs are reused by a later invocation (resumable).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, fields, replace
from pathlib import Path

from genrecal.experiments.quality_report import SCENES as report
from genrecal.experiments.quality_runs import ALL_PARTS, cached_model, say, train_run
from genrecal.experiments.quality_scenes_plan import CRITERIA, FULL, QUICK, ScenesPlan
from genrecal.experiments.quality_scenes_runs import (
    easy_vqa_items, items, reuse_or_run, score, teacher_answer_data, write_data,
)

SFT_PARTS = ("layers", "norm", "embed", "head", "projector")
REGIMES = ("a-gold", "b-teacher-answers")
METHODS = {  # name -> (kind, DistillConfig overrides or GoldRun fields)
    "sft": ("distill", {"method": "sft"}),
    "uld": ("distill", {"method": "uld"}),
    "genrecal": ("distill", {"method": "genrecal"}),
    "genrecal-embeddings": ("distill", {"method": "genrecal", "recal_answer_input": "embedding"}),
    "gold": ("gold", {"lmbda": 0.0, "ce_weight": 1.0}),
    "gold-on-policy": ("gold", {"lmbda": 0.5, "ce_weight": 1.0}),
}


def available_methods() -> dict[str, str | None]:
    """name -> None when it can run here, else why not (a DistillConfig knob or trl missing)."""
    from genrecal.distill.config import DistillConfig

    known = {f.name for f in fields(DistillConfig)}
    out = {}
    for name, (kind, cfg) in METHODS.items():
        missing = [k for k in cfg if kind == "distill" and k not in known]
        out[name] = f"DistillConfig has no {missing[0]} (not in this checkout yet)" if missing else None
        if kind == "gold" and out[name] is None:
            try:
                from genrecal.experiments.quality_scenes_gold import gold_modules
                gold_modules()
            except Exception as err:  # GoldUnavailable, or trl failing to import
                out[name] = str(err)
    return out


# ---------------------------------------------------------------- models
def _vocab() -> tuple[str, ...]:
    from genrecal.data.scenes import vocabulary_text

    return vocabulary_text()


ROLES = {  # role -> (cache name, family/size/vision-steps plan fields, data set, its images, SFT steps)
    "teacher": ("scenes-teacher", ("teacher_family", "teacher_size", "teacher_vision_steps"), "teacher",
                "teacher_images", "teacher_steps"),
    "student": ("scenes-student", ("student_family", "student_size", "student_vision_steps"), "pretrain",
                "pretrain_images", "pretrain_steps"),
}


def build_model(role: str, cache: Path, data_root: Path, plan: ScenesPlan) -> dict:
    """The cached teacher, or the student start: zoo model with the task's tokenizer -> scene vision
    pretraining -> SFT (all parts) on its own scenes. Returns cached_model's info."""
    from genrecal.experiments.quality_scenes_vision import SCENE_TASK

    name, (family, size, vision), data_name, images, steps = ROLES[role]
    keys = (family, size, vision, images, steps, "questions_per_image", "shapes_share", "batch_size", "lr",
            "min_lr", "data_seed")
    recipe = {"task": "scenes", **{k: getattr(plan, k) for k in keys}}
    # cached_model hashes the vision schedule
    schedule = {"lr": getattr(plan, f"{role}_vision_lr"), "warmup": getattr(plan, f"{role}_vision_warmup")}
    n_steps = getattr(plan, steps)

    def build(start: Path, run_dir: Path):
        data = write_data(data_root, data_name, plan, getattr(plan, images))
        say(f"training the {role}: {n_steps} steps on {getattr(plan, images)} images")
        model, seconds, _ = train_run(run_dir, False, student=str(start), data=str(data), method="sft",
                                   max_steps=n_steps, batch_size=plan.batch_size, lr=plan.lr, min_lr=plan.min_lr,
                                   sft_train=ALL_PARTS)
        return model, seconds, n_steps, n_steps * plan.batch_size

    return cached_model(cache, name, recipe, getattr(plan, family), getattr(plan, size), build, getattr(plan, vision),
                        role, _vocab(), SCENE_TASK, schedule)


# ---------------------------------------------------------------- runs
def spec(plan: ScenesPlan, ctx: dict, regime: str, name: str, seed: int, threads: int) -> dict:
    """One run's full description (its hash is the reuse key)."""
    kind, cfg = METHODS[name]
    data, steps = ctx["data"][regime], plan.budget_steps
    run_dir = ctx["out"] / "runs" / f"{regime}-{name}-seed{seed}"
    base = {"name": name, "method": name, "regime": regime, "seed": seed, "steps": steps,
            "batch_size": plan.batch_size, "threads": threads, "run_dir": str(run_dir), "test": str(ctx["test"]),
            "test_limit": None, "easy_questions": plan.easy_questions, "start_recipe": ctx["start"]["recipe"]}
    if kind == "gold" or cfg["method"] != "sft" or regime != "a-gold":  # SFT on gold answers never sees the teacher
        base["teacher_recipe"] = ctx["teacher"]["recipe"]
    if kind == "gold":
        base["gold"] = {"student": ctx["start"]["path"], "teacher": ctx["teacher"]["path"], "data": str(data),
                        "out": str(run_dir), "steps": steps, "batch_size": plan.batch_size, "lr": plan.lr,
                        "min_lr": plan.min_lr, "seed": seed, **cfg}
        return base
    fields_ = {"student": ctx["start"]["path"], "data": str(data), "max_steps": steps, "batch_size": plan.batch_size,
               "lr": plan.lr, "min_lr": plan.min_lr, "seed": seed, "sft_train": SFT_PARTS, "recal_depth": plan.recal_depth,
               **cfg}
    if cfg["method"] != "sft":
        fields_["teacher"] = ctx["teacher"]["path"]
    return {**base, "fields": fields_}


def unlimited_spec(plan: ScenesPlan, ctx: dict, threads: int) -> dict:
    """The "unlimited budget" SFT run of the criteria (gold answers: its key does not involve the teacher,
    so it can run before the teacher is built). ctx: out, start, test."""
    unlimited = write_data(ctx["out"] / "data", "unlimited", plan, plan.unlimited_images)
    s = spec(replace(plan, budget_steps=plan.unlimited_steps), {**ctx, "data": {"a-gold": unlimited}}, "a-gold",
             "sft", 0, threads)
    s.update(name="sft-unlimited", run_dir=str(ctx["out"] / "runs" / "criterion-sft-unlimited"))
    return s


def criteria(plan: ScenesPlan, ctx: dict, threads: int) -> dict:
    """The pre-registered regime criteria, measured."""
    import json

    layers = json.loads((Path(ctx["start"]["path"]) / "config.json").read_text())["text_config"]["num_hidden_layers"]
    probes = ctx["start"]["vision"]["probe_accuracy"] if ctx["start"].get("vision") else {}
    teacher_probes = ctx["teacher"]["vision"]["probe_accuracy"] if ctx["teacher"].get("vision") else {}
    run = reuse_or_run(unlimited_spec(plan, ctx, threads))
    teacher = ctx["teacher"]["scores"]["accuracy"]
    return {"depth": {"student_layers": layers, "recalibrator_layers": plan.recal_depth,
                      "ratio": layers / plan.recal_depth, "met": layers / plan.recal_depth >= CRITERIA["depth_ratio"]},
            "student_probe": {**probes, "met": bool(probes) and min(probes.values()) >= CRITERIA["probe_min"]},
            "teacher_probe": {**teacher_probes,
                              "met": bool(teacher_probes) and min(teacher_probes.values()) >= CRITERIA["probe_min"]},
            "sft_unlimited": {"accuracy": run["accuracy"], "teacher": teacher, "ratio": run["accuracy"] / teacher,
                              "steps": plan.unlimited_steps, "images": plan.unlimited_images, "run": run,
                              "met": run["accuracy"] / teacher >= CRITERIA["sft_unlimited_vs_teacher"]}}


def run_scenes(plan: ScenesPlan, seeds: list[int], out: Path, cache: Path, methods: list[str], regimes: list[str],
               threads: int = 1, command: str = "", jobs: int = 1) -> dict:
    """The whole benchmark; writes OUT/quality_scenes.{json,md,png} (rewritten after every run) and returns it.
    jobs: runs trained at once, each in its own process with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data_root = out / "data"
    ctx = {"out": out, "teacher": build_model("teacher", cache, data_root, plan),
           "start": build_model("student", cache, data_root, plan)}
    ctx["test"] = write_data(data_root, "test", plan, plan.test_images)
    tests = items(ctx["test"]), easy_vqa_items(plan.easy_questions)
    for role in ("teacher", "start"):
        ctx[role]["scores"] = ctx[role].get("scores") or score(ctx[role]["path"], *tests, desc=role)
        say(f"{role}: {100 * ctx[role]['scores']['accuracy']:.1f}% on held-out scenes {ctx[role]['scores']['by_kind']}")
    result = {"kind": "quality_scenes", "schema": 1, "command": command, "plan": asdict(plan), "seeds": seeds,
              "criteria_targets": CRITERIA, "teacher": ctx["teacher"], "start": ctx["start"], "runs": [],
              "skipped_methods": {m: why for m, why in available_methods().items() if why and m in methods},
              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    report.write_all(result, out)  # the pre-registered criteria are on disk before any comparison
    result["criteria"] = criteria(plan, ctx, threads)
    report.write_all(result, out)
    gold_budget = write_data(data_root, "budget", plan, plan.budget_images)
    ctx["data"] = {"a-gold": gold_budget}
    if "b-teacher-answers" in regimes:
        path, label = teacher_answer_data(ctx["teacher"]["path"], gold_budget, data_root / "budget-teacher-answers",
                                          limit=None)
        ctx["data"]["b-teacher-answers"], result["teacher_answer_labels"] = path, label
    todo = [spec(plan, ctx, regime, name, seed, threads) for seed in seeds for regime in regimes for name in methods
            if name not in result["skipped_methods"]]
    lock = threading.Lock()

    def one(s: dict) -> None:
        record = reuse_or_run(s)
        with lock:  # the report on disk grows run by run: a killed invocation leaves every finished run
            result["runs"].append(record)
            result["wall_seconds"] = round(time.perf_counter() - t0, 1)
            report.write_all(result, out)

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each run is its own child process
        list(pool.map(one, todo))
    order = {(s["regime"], s["name"], s["seed"]): i for i, s in enumerate(todo)}
    result["runs"].sort(key=lambda r: order[r["regime"], r["name"], r["seed"]])  # plan order, whatever finished first
    result["summary"] = report.summarize(result["runs"], ctx["teacher"]["scores"]["accuracy"])
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    report.write_all(result, out)
    return result


# ---------------------------------------------------------------- CLI
def _names(allowed, what: str):
    def parse(text: str) -> list[str]:
        names = [s.strip() for s in text.split(",") if s.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from {', '.join(allowed)}")
        return names
    return parse


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds wants a comma list of integers, got {text!r}") from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"wants an integer >= 1, got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets (a smoke run, minutes)")
    parser.add_argument("--seeds", type=_seeds, help="comma list (default 0,1,2; --quick: 0)")
    parser.add_argument("--methods", type=_names(METHODS, "method(s)"), default=list(METHODS),
                        help=f"comma list of {', '.join(METHODS)} (default all)")
    parser.add_argument("--regimes", type=_names(REGIMES, "regime(s)"), default=list(REGIMES),
                        help=f"comma list of {', '.join(REGIMES)} (default both)")
    parser.add_argument("--out", default="quality-scenes-out")
    parser.add_argument("--cache", help="cached teacher and student (default ~/.cache/genrecal/quality)")
    parser.add_argument("--threads", type=_positive, default=1, help="torch CPU threads per run (default 1)")
    parser.add_argument("--jobs", type=_positive, default=1, help="runs trained at once, one process each (default 1; "
                                                            "2 on 2 idle cores)")


def command_line(args) -> str:
    words = ["genrecal-bench quality-scenes"] + (["--quick"] if args.quick else [])
    if args.seeds:
        words.append("--seeds " + ",".join(map(str, args.seeds)))
    if args.methods != list(METHODS):
        words.append("--methods " + ",".join(args.methods))
    if args.regimes != list(REGIMES):
        words.append("--regimes " + ",".join(args.regimes))
    words += [f"--threads {args.threads}"] if args.threads != 1 else []
    words += [f"--jobs {args.jobs}"] if args.jobs != 1 else []
    return " ".join(words + [f"--out {args.out}"])


def run_from_args(args) -> int:
    plan = QUICK if args.quick else FULL
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "genrecal" / "quality"
    result = run_scenes(plan, seeds, Path(args.out), cache, args.methods, args.regimes, args.threads, command_line(args),
                        args.jobs)
    print(report.markdown(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genrecal-bench quality-scenes", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
