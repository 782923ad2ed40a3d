"""`genrecal-bench quality-v4`: first prove the regime can show a transfer (KD beats SFT), then compare methods.

    genrecal-bench quality-v4 --out v4-out                      # gate (pilot, 3 seeds), then the comparison
    genrecal-bench quality-v4 --stage gate --out v4-out         # the positive control only
    genrecal-bench quality-v4 --stage gate --set b1_images=150 --out v4-out   # a regime change, recorded
    genrecal-bench quality-v4 --quick --out v4-quick            # a smoke run of every step (`slow` test)

0. One vision tower pretrained on scenes; from it the student start (Qwen2-VL `deep8`, short SFT on other
   scenes) and the same-tokenizer teacher (the same architecture 2x wider, trained long) (quality_v4_models).
1. The question-only prior (per kind the most frequent B1 answer) and the pre-registered criteria
   (quality_v4_criteria, benchmarks/results/quality_v4_criteria.md), measured and printed in every table.
2. The gate: KD vs SFT on B1, pilot seed 0, then every seed; KD must beat SFT by >= 3 points with every KD
   seed above every SFT seed. Every attempt (a plan changed by --set) is kept in OUT/quality_v4_gate.json.
3. When the gate holds: every method of `METHODS` in budgets B1 and B2 (OUT/quality_v4.{json,md,png}).
Each run is its own process and result file (OUT/runs/*.result.json), reused by a later invocation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from genrecal.experiments import quality_v4_report as report
from genrecal.experiments.quality_runs import cache_key, say
from genrecal.experiments.quality_scenes import _names, _seeds
from genrecal.experiments.quality_v4_criteria import checks, gate
from genrecal.experiments.quality_v4_models import build_start, build_teacher, vision_tower
from genrecal.experiments.quality_v4_plan import CRITERIA, FULL, QUICK, V4Plan
from genrecal.experiments.quality_v4_runs import SFT_PARTS, prior, run, scored, write_data

BUDGETS = ("b1", "b2")
METHODS = {  # name -> (DistillConfig overrides, training data: "labels" | "labels+teacher")
    "sft": ({"method": "sft"}, "labels"),
    "kd": ({"method": "kd"}, "labels+teacher"),
    "seq-kd": ({"method": "sft"}, "labels+teacher"),
    "uld": ({"method": "uld"}, "labels+teacher"),
    "genrecal": ({"method": "genrecal"}, "labels+teacher"),
    "genrecal-sft-parts": ({"method": "genrecal", "distill_train": SFT_PARTS}, "labels+teacher"),
    "sft-stage3": ({"method": "sft"}, "labels"),
}
"""With the same-tokenizer teacher. In B1 "labels+teacher" is B1's labels only (KD, ULD and GenRecal read the
teacher on them) except for seq-kd, which adds the teacher's answers to B1's prompts; in B2 it is B1's labels +
the teacher's answers to B2's prompts. sft-stage3: SFT for GenRecal's stage-3 steps only (a control)."""
GATE_METHODS = ("sft", "kd")


# ---------------------------------------------------------------- models, data, criteria
def prepare(plan: V4Plan, out: Path, cache: Path) -> dict:
    """Models, data, the prior and the teacher / start scores; nothing here trains a method."""
    data_root = out / "data"
    ctx = {"out": out, "plan": plan, "data": {n: write_data(data_root, n, plan)
                                              for n in ("teacher", "pretrain", "b1", "test")}}
    ctx["vision"] = vision_tower(cache, plan)
    ctx["teacher"] = build_teacher(cache, ctx["data"]["teacher"], plan, ctx["vision"])
    ctx["start"] = build_start(cache, ctx["data"]["pretrain"], plan, ctx["vision"])
    ctx["prior"] = prior(ctx["data"]["b1"], ctx["data"]["test"])
    for role in ("teacher", "start"):
        ctx[role]["scores"] = scored(ctx[role], ctx["data"]["test"], plan, role)
        say(f"{role}: {100 * ctx[role]['scores']['accuracy']:.1f}% held-out {ctx[role]['scores']['by_kind']}, "
            f"in kind {100 * ctx[role]['scores']['in_kind']:.1f}%")
    say(f"question-only prior: {100 * ctx['prior']['accuracy']:.1f}% {ctx['prior']['by_kind']}")
    return ctx


def spec(plan: V4Plan, ctx: dict, budget: str, name: str, seed: int, threads: int) -> dict:
    """One run's full description (its hash, without run_dir and threads, is the reuse key)."""
    overrides, data_kind = METHODS[name]
    data = ctx["data"]["b1"] if data_kind == "labels" or (budget == "b1" and name != "seq-kd") else \
        ctx["data"][f"{budget}-labels+teacher"]
    steps = plan.budget_steps
    if name == "sft-stage3":
        from genrecal.distill.config import DistillConfig

        steps = DistillConfig(method="genrecal", teacher="T", max_steps=plan.budget_steps).stage_steps()["sft"]
    fields_ = {"student": ctx["start"]["path"], "data": str(data), "max_steps": steps,
               "batch_size": plan.batch_size, "lr": plan.lr, "min_lr": plan.min_lr, "seed": seed,
               "sft_train": SFT_PARTS, **overrides}
    record = {"name": name, "method": name, "regime": budget, "seed": seed, "steps": steps,
              "batch_size": plan.batch_size, "threads": threads, "test": str(ctx["data"]["test"]),
              "max_new_tokens": plan.max_new_tokens, "start_recipe": ctx["start"]["recipe"],
              "run_dir": str(ctx["out"] / "runs" / f"{budget}-{name}-seed{seed}"), "fields": fields_}
    if overrides["method"] != "sft" or data_kind != "labels":
        record["teacher_recipe"] = ctx["teacher"]["recipe"]
    if overrides["method"] != "sft":
        fields_.update(teacher=ctx["teacher"]["path"], temperature=plan.temperature)
    return record


def _criteria(ctx: dict, sft_b1: float | None) -> list[dict]:
    return checks(ctx["prior"], ctx["start"]["scores"], ctx["teacher"]["scores"], sft_b1)


# ---------------------------------------------------------------- the gate
def run_gate(plan: V4Plan, ctx: dict, seeds: list[int], threads: int, changes: dict) -> dict:
    """Pilot (first seed), then the other seeds; records this attempt in OUT/quality_v4_gate.json."""
    path = ctx["out"] / "quality_v4_gate.json"
    result = json.loads(path.read_text()) if path.exists() else {"kind": "quality_v4_gate", "attempts": []}
    attempt = {"plan": plan.to_dict(), "plan_key": cache_key(plan.to_dict()), "changes": changes, "seeds": seeds,
               "prior": ctx["prior"], "teacher": _model(ctx["teacher"]), "start": _model(ctx["start"]), "runs": []}
    result["attempts"] = [a for a in result["attempts"] if a["plan_key"] != attempt["plan_key"]] + [attempt]
    result["criteria_targets"] = CRITERIA
    for i, seed in enumerate(seeds):
        for name in GATE_METHODS:
            attempt["runs"].append(run(spec(plan, ctx, "b1", name, seed, threads)))
        if i == 0:
            acc = {r["name"]: r["accuracy"] for r in attempt["runs"]}
            attempt["pilot"] = {**acc, "margin": acc["kd"] - acc["sft"]}
            say(f"pilot (seed {seed}): kd {100 * acc['kd']:.1f}% vs sft {100 * acc['sft']:.1f}%")
        _write_gate(result, attempt, ctx)
    by = {m: [r["accuracy"] for r in attempt["runs"] if r["name"] == m] for m in GATE_METHODS}
    attempt["gate"] = gate(by["kd"], by["sft"]) if len(seeds) > 1 else None
    _write_gate(result, attempt, ctx)
    return attempt


def _write_gate(result: dict, attempt: dict, ctx: dict) -> None:
    sft = [r["accuracy"] for r in attempt["runs"] if r["name"] == "sft"]
    attempt["criteria"] = _criteria(ctx, sum(sft) / len(sft) if sft else None)
    result["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (ctx["out"] / "quality_v4_gate.json").write_text(json.dumps(result, indent=2) + "\n")
    (ctx["out"] / "quality_v4_gate.md").write_text(report.gate_markdown(result))


def _model(m: dict) -> dict:
    return {k: m.get(k) for k in ("path", "train_seconds", "steps", "scores", "vision")}


# ---------------------------------------------------------------- the comparison
def teacher_data(ctx: dict, budget: str) -> Path:
    """B1 labels + the teacher's greedy answers to the prompts of B1 (b1) or of B2's other images (b2)."""
    from genrecal.experiments.quality_scenes_runs import teacher_answer_data

    plan, root = ctx["plan"], ctx["out"] / "data"
    prompts = ctx["data"]["b1"] if budget == "b1" else write_data(root, "b2-prompts", plan)
    folder = prompts.parent / f"teacher-answers-{cache_key(ctx['teacher']['recipe'])}"  # one per teacher
    answered, label = teacher_answer_data(ctx["teacher"]["path"], prompts, folder, limit=None)
    ctx.setdefault("teacher_answer_labels", {})[budget] = label
    b1 = ctx["data"]["b1"]

    def rel(folder: Path, image: str) -> str:  # images must lie under the data file's folder (the image rule)
        return os.path.relpath((folder / image).resolve(), root.resolve())

    merged = [{**r, "image": rel(b1.parent, r["image"])} for r in json.loads(b1.read_text())]
    merged += [{**r, "images": [rel(answered.parent, im) for im in r["images"]]}
               for r in json.loads(answered.read_text())]  # teacher-answers links images into its own folder
    key = cache_key({"budget": budget, "b1": plan.data_recipe("b1"), "teacher": ctx["teacher"]["recipe"],
                     "prompts": plan.data_recipe("b1" if budget == "b1" else "b2-prompts")})
    out = root / f"{budget}-labels+teacher-{key}.json"
    out.write_text(json.dumps(merged))
    return out


def run_compare(plan: V4Plan, ctx: dict, seeds: list[int], methods: list[str], budgets: list[str], threads: int,
                gate_attempt: dict | None) -> dict:
    for budget in budgets:
        ctx["data"][f"{budget}-labels+teacher"] = teacher_data(ctx, budget)
    result = {"kind": "quality_v4", "plan": plan.to_dict(), "seeds": seeds, "prior": ctx["prior"],
              "teacher": _model(ctx["teacher"]), "start": _model(ctx["start"]), "gate": gate_attempt,
              "teacher_answer_labels": ctx.get("teacher_answer_labels"), "criteria_targets": CRITERIA, "runs": []}
    for seed in seeds:
        for budget in budgets:
            for name in methods:
                # SFT on labels only sees B1's labels in B2 too: the same run, reported in both budgets
                same = budget == "b2" and METHODS[name][1] == "labels"
                record = run(spec(plan, ctx, "b1" if same else budget, name, seed, threads))
                result["runs"].append({**record, "regime": budget})
                sft = [r["accuracy"] for r in result["runs"] if r["name"] == "sft" and r["regime"] == "b1"]
                result["criteria"] = _criteria(ctx, sum(sft) / len(sft) if sft else None)
                report.write_all(result, ctx["out"])
    result["summary"] = report.summarize(result)
    report.write_all(result, ctx["out"])
    return result


def run_v4(plan: V4Plan, out: Path, cache: Path, seeds: list[int], stage: str, methods: list[str],
           budgets: list[str], threads: int = 1, changes: dict | None = None, smoke: bool = False) -> dict:
    """The gate, then (stage "all") the comparison when the gate holds; smoke: always compare (--quick: a test
    of every step, whose numbers say nothing)."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    ctx = prepare(plan, out, cache)
    attempt = run_gate(plan, ctx, seeds, threads, changes or {})
    held = bool(attempt["gate"] and attempt["gate"]["holds"])
    say(f"gate: {report.gate_line(attempt)}")
    outcome = {"gate": attempt, "compare": None}
    if stage == "all" and (held or smoke):
        outcome["compare"] = run_compare(plan, ctx, seeds, methods, budgets, threads, attempt)
    elif stage == "all":
        say("the gate does not hold: no method comparison (change the regime, see quality_v4_criteria.md)")
    say(f"wall time {time.perf_counter() - t0:.0f} s")
    return outcome


# ---------------------------------------------------------------- CLI
def parse_set(pairs: list[str]) -> dict:
    """--set key=value pairs as typed V4Plan fields (a regime change of the gate)."""
    types = {f.name: f.type for f in fields(V4Plan)}
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types or not value:
            raise argparse.ArgumentTypeError(f"--set wants FIELD=VALUE with a V4Plan field, got {pair!r}")
        kind = str(types[key])
        out[key] = float(value) if "float" in kind else int(value) if "int" in kind and "tuple" not in kind else \
            tuple(int(v) for v in value.split("-")) if "tuple" in kind else \
            value.lower() in ("1", "true", "yes") if "bool" in kind else value
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny models and budgets (a smoke run, minutes)")
    parser.add_argument("--stage", choices=("gate", "all"), default="all",
                        help="gate: the positive control only; all: then the comparison when the gate holds")
    parser.add_argument("--seeds", type=_seeds, help="comma list (default 0,1,2; --quick: 0)")
    parser.add_argument("--methods", type=_names(METHODS, "method(s)"), default=list(METHODS),
                        help=f"comparison methods, comma list of {', '.join(METHODS)} (default all)")
    parser.add_argument("--budgets", type=_names(BUDGETS, "budget(s)"), default=list(BUDGETS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a V4Plan field (a regime change: b1_images=150, teacher_steps=3000, "
                             "temperature=2.0, objects=2-3); recorded with the gate's figures")
    parser.add_argument("--out", default="quality-v4-out")
    parser.add_argument("--cache", help="cached vision tower, teacher and start (default ~/.cache/genrecal/quality)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")


def run_from_args(args) -> int:
    changes = parse_set(args.set)
    plan = replace(QUICK if args.quick else FULL, **changes)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    cache = Path(args.cache) if args.cache else Path.home() / ".cache" / "genrecal" / "quality"
    outcome = run_v4(plan, Path(args.out), cache, seeds, args.stage, args.methods, args.budgets, args.threads,
                     changes, smoke=args.quick)
    print(report.gate_line(outcome["gate"]))
    if outcome["compare"]:
        print(report.markdown(outcome["compare"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genrecal-bench quality-v4", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
