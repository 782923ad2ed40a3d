"""`genrecal-bench quality`: GenRecal vs SFT vs ULD at an equal budget, on easy-vqa's test split.

    genrecal-bench quality --out quality-out                        # the full run: 3 seeds
    genrecal-bench quality --quick --out quality-quick              # 1 seed, smaller teacher and budget
    genrecal-bench quality --out quality-out --variants all         # + GenRecal variants (reuses the above)

0. Both models start, like real VLMs, from a pretrained vision encoder: their zoo encoder + projector
   is first trained on labelled renders (`genrecal.experiments.vision_pretrain`), the teacher's
   longer. Without it no model here learned shape, and every student sat at the question-only prior.
1. A teacher (LLaVA, WordPiece tokenizer, 64 CLIP image tokens) is trained on images drawn by
   `genrecal.data.shapes` in easy-vqa's style: many more images than easy-vqa's 4,000, so it is
   far better than a budget-limited student. Cached under --cache, keyed by a hash of its recipe.
2. A smaller student of another family (Qwen2-VL: byte BPE, M-RoPE, 16 merged image tokens) is
   pretrained by a short SFT on easy-vqa train images (cached the same way): the start of every
   method, as the paper's students are off-the-shelf models.
3. From that checkpoint, per seed: `sft`, `uld` and `genrecal` train on the same samples in the same
   order for the same number of optimizer steps (GenRecal's three stages share that count), on
   easy-vqa train images disjoint from the pretraining images.
4. Everything is scored on easy-vqa's own test split: greedy generation, exact match, overall and
   per answer kind, next to the question-only prior (the score of ignoring the image).
Results go to OUT/quality.{json,md,png}; training runs to OUT/runs/ (a finished run with identical
settings is reused by a later invocation on the same OUT), data to OUT/data/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

from genrecal.experiments.quality_plan import FULL, QUICK, VARIANTS, Plan
from genrecal.experiments.quality_report import COMPARED
from genrecal.experiments.quality_report import EASY_VQA as report
from genrecal.experiments.quality_runs import (  # noqa: F401  (re-exported: the benchmark's parts)
    ALL_PARTS, answer_kind, build_pretrained_student, build_teacher, cache_key, pretrain_recipe,
    question_only_prior, run_one, say, score, split_easy_vqa, teacher_recipe, test_items, uniform_mass,
)


# ---------------------------------------------------------------- the benchmark
def host_info(threads: int) -> dict:
    import platform

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_cores": cores, "torch_threads": threads, "torch": torch.__version__, "machine": platform.machine(),
            "load_average_at_start": [round(x, 2) for x in load],
            "summary": f"{cores} CPU cores, {threads} torch thread(s), load average {load[0]:.1f} at start"}


def describe(plan: Plan, teacher: dict, start: dict) -> dict:
    """The regime in words, for the report."""
    return {
        "pair": f"{plan.teacher_family}/{plan.teacher_size} -> {plan.student_family}/{plan.student_size}",
        "teacher": (_vision_words(plan.teacher_vision_steps, teacher) +
                    f"{plan.teacher_family}/{plan.teacher_size}, trained by SFT (all parts) for "
                    f"{plan.teacher_steps} steps x {plan.batch_size} on {plan.teacher_images} rendered "
                    f"easy-vqa-style images x {plan.teacher_questions_per_image} questions (genrecal.data.shapes; "
                    f"kinds {dict(plan.teacher_question_mix)})"),
        "student": (_vision_words(plan.student_vision_steps, start) +
                    f"{plan.student_family}/{plan.student_size}, pretrained by SFT (all parts) for "
                    f"{plan.pretrain_steps} steps x {plan.batch_size} on {plan.pretrain_images} easy-vqa train "
                    f"images, the same checkpoint for every method"),
        "budget": (f"{plan.budget_steps} optimizer steps x {plan.batch_size} samples from {plan.budget_samples} "
                   f"questions on {plan.budget_images} other easy-vqa train images; lr {plan.lr:g} -> "
                   f"{plan.min_lr:g}; GenRecal's stages split that step count (default 20/60/20%); student "
                   f"parts trained: " + (", ".join(plan.student_parts) if plan.student_parts else
                                         "DistillConfig defaults (vision tower frozen; GenRecal stage 2 trains "
                                         "decoder layers + final norm; SFT, ULD and stage 3 also embeddings, head, "
                                         "projector)")),
        "eval": (f"easy-vqa test split, the first {plan.test_questions} questions of a seed-0 shuffle, greedy "
                 f"generation, exact match"),
        "teacher_params": _params(teacher["path"]), "student_params": _params(start["path"]),
    }


def _vision_words(steps: int, info: dict) -> str:
    vision = info.get("vision")
    if not steps or not vision:
        return "vision encoder not pretrained; "
    acc = vision["probe_accuracy"]
    return (f"vision encoder + projector first pretrained on {steps} x {vision['batch_size']} labelled renders "
            f"(linear probes on held-out renders: shape {100 * acc['shape']:.0f}%, colour {100 * acc['color']:.0f}%), "
            "then ")


def _params(model_dir: str) -> int | None:
    """Parameter count read from model.safetensors without loading the model."""
    from safetensors import safe_open

    path = Path(model_dir) / "model.safetensors"
    if not path.exists():
        return None
    total = 0
    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            n = 1
            for dim in f.get_slice(key).get_shape():
                n *= dim
            total += n
    return total


def run_quality(plan: Plan, seeds: list[int], out: Path, cache: Path, variants: list[str] = (),
                threads: int = 1, progress: bool = False, command: str = "") -> dict:
    """The whole benchmark; writes OUT/quality.{json,md,png} and returns the result dict."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    host = host_info(threads)
    out.mkdir(parents=True, exist_ok=True)
    data = split_easy_vqa(out / "data", plan)
    items = test_items(plan)
    models = {"teacher": build_teacher(cache, plan, progress),
              "start": build_pretrained_student(cache, plan, data, progress)}
    for role, info in models.items():
        info.update(score(info["path"], items, progress, f"eval {role}"))
        say(f"{role}: {100 * info['accuracy']:.1f}% on {len(items)} easy-vqa test questions {info['by_kind']}")
    models["teacher"]["family"] = f"{plan.teacher_family}/{plan.teacher_size}"
    todo = [(m, m, {}) for m in COMPARED] + [(v, "genrecal", VARIANTS[v]) for v in variants]
    runs = [run_one(out / "runs", plan, name, method, seed, models, data["budget"], items, overrides, progress)
            for seed in seeds for name, method, overrides in todo]
    teacher_acc = models["teacher"]["accuracy"]
    summary = report.summarize(runs, teacher_acc)
    result = {"kind": "quality", "schema": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command,
              "plan": asdict(plan), "seeds": seeds, "regime": describe(plan, models["teacher"], models["start"]),
              "question_only_prior": question_only_prior(items), "teacher": models["teacher"],
              "attention_mass_uniform": uniform_mass(models["start"]["path"], models["teacher"]["path"],
                                                     data["budget"]),
              "pretrained_student": models["start"], "runs": runs, "summary": summary,
              "verdict": report.verdict(summary, teacher_acc), "host": host,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    result["invocations"] = _previous_invocations(out / "quality.json") + [
        {"command": command, "created": result["created"], "wall_seconds": result["wall_seconds"],
         "trained_runs": sum(not r["reused"] for r in runs), "reused_runs": sum(r["reused"] for r in runs),
         "teacher_reused": models["teacher"]["reused"], "host": host["summary"]}]
    paths = report.write_all(result, out)
    say(f"done in {result['wall_seconds'] / 60:.1f} min: {', '.join(str(p) for p in paths.values())}")
    return result


def _previous_invocations(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text()).get("invocations", [])
    except (OSError, ValueError):
        return []


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds wants a comma list of integers, got {text!r}") from None


def _variants(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    names = list(VARIANTS) if names == ["all"] else names
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {bad}; choose from {', '.join(VARIANTS)} or all")
    return names


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [p for p in parts if p not in ALL_PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"--student-parts: choose from {', '.join(ALL_PARTS)}")
    return parts


def settable() -> list[str]:
    """Plan fields `--set` may change: the numeric ones (budgets, steps, sizes of data, learning rates)."""
    return [f.name for f in fields(Plan) if type(getattr(FULL, f.name)) in (int, float)]


def _setting(text: str) -> tuple[str, int | float]:
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or name not in settable():
        raise argparse.ArgumentTypeError(f"--set wants FIELD=VALUE with FIELD one of {', '.join(settable())}; "
                                         f"got {text!r}")
    kind = type(getattr(FULL, name))
    try:
        number = kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"--set {name}: {value!r} is not {what}") from None
    zero_ok = name.endswith("vision_steps") or name == "data_seed"  # 0 vision steps: no vision pretraining
    if number < 0 or (number == 0 and not zero_ok):
        raise argparse.ArgumentTypeError(f"--set {name}: {value!r} must be {'>= 0' if zero_ok else '> 0'}")
    return name, number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="1 seed, smaller teacher and budget (minutes)")
    parser.add_argument("--seeds", type=_seeds, help="comma list (default 0,1,2; --quick: 0)")
    parser.add_argument("--out", default="quality-out", help="output dir (default quality-out)")
    parser.add_argument("--cache", help="where trained teachers and pretrained students are kept, keyed by a hash "
                                        "of their recipe (default ~/.cache/genrecal/quality)")
    parser.add_argument("--variants", type=_variants, default=[],
                        help=f"GenRecal variants to run too: comma list of {', '.join(VARIANTS)}, or all")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: these models are too small to gain from more)")
    parser.add_argument("--student-parts", type=_parts, dest="student_parts",
                        help="student parts EVERY method trains in the budget, e.g. layers,norm,embed,head,projector,"
                             "vision (default: DistillConfig's, the vision tower frozen)")
    parser.add_argument("--set", type=_setting, action="append", default=[], dest="settings", metavar="FIELD=VALUE",
                        help="change one number of the regime (repeatable), e.g. --set pretrain_steps=600; the "
                             "report records it; cached models and runs are keyed by the changed recipe")
    parser.add_argument("--progress", action="store_true", help="progress bars for training and evaluation")


def main(argv: list[str] | None = None) -> int:
    """`python -m genrecal.experiments.quality ...`, and what `genrecal-bench quality` delegates to."""
    parser = argparse.ArgumentParser(prog="genrecal-bench quality", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(sys.argv[1:] if argv is None else argv))


def command_line(args) -> str:
    """The canonical command for the report (rebuilt from the parsed options)."""
    words = ["genrecal-bench quality"] + (["--quick"] if args.quick else [])
    if args.seeds:
        words.append("--seeds " + ",".join(map(str, args.seeds)))
    if args.variants:
        words.append("--variants " + ",".join(args.variants))
    if args.student_parts:
        words.append("--student-parts " + ",".join(args.student_parts))
    words += [f"--set {name}={value}" for name, value in getattr(args, "settings", [])]
    if args.threads != 1:
        words.append(f"--threads {args.threads}")
    return " ".join(words + [f"--out {args.out}"])


def run_from_args(args) -> int:
    plan = QUICK if args.quick else FULL
    if args.student_parts:
        plan = replace(plan, student_parts=args.student_parts)
    plan = replace(plan, **dict(args.settings))
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "genrecal" / "quality"
    result = run_quality(plan, seeds, Path(args.out), cache, args.variants, args.threads, args.progress,
                         command_line(args))
    print(report.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
