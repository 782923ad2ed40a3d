"""`genrecal quickstart [--out DIR]`: the whole toolkit on easy-vqa, offline, on a laptop CPU.

Builds a LLaVA teacher and a smaller Qwen2-VL student (other tokenizer, other image-token scheme),
trains the teacher briefly, gives the student a short pretraining step on disjoint data (the
paper's students start pretrained), distills it with GenRecal, and reports test accuracy of all
three. Every step writes into OUT and is skipped when its output already exists, so an interrupted
quickstart continues where it stopped.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from genrecal import zoo
from genrecal.data import load_easy_vqa_questions, write_easy_vqa
from genrecal.distill.config import DistillConfig
from genrecal.distill.evaluate import accuracy
from genrecal.distill.trainer import train

ALL_PARTS = ("layers", "norm", "embed", "head", "projector", "vision")


@dataclass(frozen=True)
class Plan:
    """Budgets; `fast` is the smoke-test version used by the tests."""

    teacher_family: str = "llava"
    teacher_size: str = "base"
    student_family: str = "qwen2_vl"
    student_size: str = "tiny"
    teacher_samples: int = 16000
    pretrain_samples: int = 2000
    distill_samples: int = 4000
    teacher_steps: int = 1500
    pretrain_steps: int = 150
    distill_steps: int = 300
    test_questions: int = 500
    batch_size: int = 32
    bench_runs: int = 3
    bench_questions: int = 100


FAST = Plan(teacher_samples=256, pretrain_samples=64, distill_samples=64, teacher_steps=8, pretrain_steps=4,
            distill_steps=6, test_questions=32, batch_size=8, bench_runs=1, bench_questions=4)


def _say(msg: str) -> None:
    print(f"[quickstart] {msg}", flush=True)


def split_train_data(root: Path, plan: Plan) -> dict[str, Path]:
    """easy-vqa train, shuffled once, cut into disjoint teacher / pretrain / distill slices."""
    full = root / "train"
    if not (full / "data.json").exists():
        write_easy_vqa(full, split="train", seed=0)
    records = json.loads((full / "data.json").read_text())
    cuts = {"teacher": plan.teacher_samples, "pretrain": plan.pretrain_samples, "distill": plan.distill_samples}
    paths, start = {}, 0
    for name, n in cuts.items():
        path = full / f"{name}.json"
        if not path.exists():
            path.write_text(json.dumps(records[start:start + n]))
        paths[name], start = path, start + n
    return paths


def _train(out: Path, name: str, **kwargs) -> Path:
    """Run one training job in OUT/runs/<name> (resumable) and move its student to OUT/<name>."""
    final = out / name
    if (final / "model.safetensors").exists():
        _say(f"reusing {final}")
        return final
    run_dir = out / "runs" / name
    cfg = DistillConfig(out=str(run_dir), resume=True, checkpoint_every=100, **kwargs)
    os.replace(train(cfg) / "student", final)
    return final


def quickstart(out: str | Path = "genrecal-out", fast: bool = False) -> dict:
    plan = FAST if fast else Plan()
    out = Path(out)
    t0 = time.perf_counter()
    _say(f"writing easy-vqa (PyPI package, offline) to {out / 'data'}")
    data = split_train_data(out / "data", plan)
    models = out / "models"
    for role, fam, size in (("teacher", plan.teacher_family, plan.teacher_size),
                            ("student", plan.student_family, plan.student_size)):
        if not (models / role / "config.json").exists():
            zoo.build_to_dir(fam, models / role, size=size, seed=0)
        _say(f"{role}: {fam}/{size} -> {models / role}")
    # lr: from-scratch tiny models (the method page's 1e-4 is for pretrained VLMs); one DataLoader worker
    # renders the next micro-batch while this process trains: 0.74 -> 0.59 s per teacher step here (2
    # cores), the same weights as rendering in-process (tests/distill/test_batches.py)
    common = dict(lr=1e-3, min_lr=1e-4, data_workers=1)
    _say(f"1/3 training the teacher ({plan.teacher_steps} steps)")
    teacher = _train(out, "teacher", student=str(models / "teacher"), data=str(data["teacher"]), method="sft",
                     max_steps=plan.teacher_steps, batch_size=plan.batch_size, sft_train=ALL_PARTS, **common)
    _say(f"2/3 pretraining the student on disjoint data ({plan.pretrain_steps} steps)")
    pretrained = _train(out, "student-pretrained", student=str(models / "student"), data=str(data["pretrain"]),
                        method="sft", max_steps=plan.pretrain_steps, batch_size=plan.batch_size,
                        sft_train=ALL_PARTS, **common)
    _say(f"3/3 GenRecal: {plan.teacher_family} teacher -> {plan.student_family} student ({plan.distill_steps} steps)")
    distilled = _train(out, "student-genrecal", teacher=str(teacher), student=str(pretrained), data=str(data["distill"]),
                       method="genrecal", max_steps=plan.distill_steps, batch_size=plan.batch_size // 2, **common)
    results = evaluate_all(out, plan, {"teacher": teacher, "student (pretrained)": pretrained,
                                       "student (GenRecal)": distilled})
    _say("exporting the distilled student for cpu (ONNX fp32/int8w/int4) and phone (GGUF Q4_K_M/Q8_0 + mmproj)")
    results["export"] = export_student(out / "export", distilled)
    _say("benchmarking teacher, student and its exports (latency per phase + accuracy through each runtime)")
    exported = {f"student {name}": out / "export" / name for name in ("onnx-int8w", "gguf-q4_k_m")}
    results["bench"] = bench(out, plan, {"teacher": teacher, "student torch": distilled, **exported})
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "quickstart.json").write_text(json.dumps(results, indent=2))
    print_summary(out, results)
    return results


def export_student(out: Path, student: Path) -> dict:
    """genrecal-export --target cpu, then the phone target's GGUF files, each checked against PyTorch."""
    from genrecal.export.cli import parity_table
    from genrecal.export.run import ExportOptions, export

    records = []
    for target, formats in (("cpu", None), ("phone", ("gguf",))):  # phone's ONNX int8w = cpu's
        summary = export(ExportOptions(student=student, out=out, target=target, formats=formats),
                         log=lambda msg: _say(f"  {msg}"))
        records += summary["artifacts"]
    print(parity_table(records), flush=True)
    return {"dir": str(out), "artifacts": [{k: r.get(k) for k in ("dir", "status", "error")} for r in records]}


def bench(out: Path, plan: Plan, artifacts: dict[str, Path]) -> dict:
    """genrecal-bench latency + accuracy for each artifact, then one report with plots."""
    from genrecal.benchmarks.accuracy import AccuracyConfig, run_accuracy
    from genrecal.benchmarks.latency import LatencyConfig, run_latency
    from genrecal.benchmarks.report import write_report
    from genrecal.benchmarks.results import write_json

    results_dir = out / "bench" / "results"
    rows = {}
    for label, path in artifacts.items():
        if not path.exists():
            continue
        role = "teacher" if label == "teacher" else "student"
        lat = run_latency(LatencyConfig(str(path), role=role, label=label, runs=plan.bench_runs,
                                        measure_bandwidth=False), log=lambda m: None)
        acc = run_accuracy(AccuracyConfig(str(path), limit=plan.bench_questions, role=role, label=label),
                           log=lambda m: None)
        slug = label.replace(" ", "_")
        write_json(lat, results_dir / f"latency_{slug}.json")
        write_json(acc, results_dir / f"accuracy_{slug}.json")
        rows[label] = {"decode_tok_s": lat["summary"]["decode_tok_s"]["median"],
                       "ttft_ms": lat["summary"]["ttft_ms"]["median"],
                       "peak_rss_mb": lat["summary"]["peak_rss_mb"]["median"],
                       "exact_match": acc["exact_match"]}
    report = write_report([results_dir], out / "bench")
    print(f"  {'':22s} {'decode tok/s':>12s} {'TTFT ms':>8s} {'peak RSS MB':>11s} {'accuracy':>8s}")
    for label, r in rows.items():
        print(f"  {label:22s} {r['decode_tok_s']:12.1f} {r['ttft_ms']:8.1f} {r['peak_rss_mb']:11.0f} "
              f"{100 * r['exact_match']:7.1f}%")
    _say(f"bench report: {report}")
    return {"report": str(report), "rows": rows}


def question_only_prior(train_json: Path, items: list[tuple[str, str, str]]) -> dict:
    """What a model that never looks at the image scores on `items`: per question text the most frequent answer
    of the easy-vqa train records in `train_json` (genrecal.data.prior)."""
    from genrecal.data.prior import text_prior

    records = json.loads(train_json.read_text())
    train = [(r["conversations"][0]["value"].replace("<image>", "").strip(), r["conversations"][1]["value"])
             for r in records]
    return text_prior(train, [(q, a) for q, a, _ in items])


def evaluate_all(out: Path, plan: Plan, dirs: dict[str, Path]) -> dict:
    items = [(q, a, str(p)) for q, a, p in load_easy_vqa_questions("test", limit=plan.test_questions, seed=0)]
    prior = question_only_prior(out / "data" / "train" / "data.json", items)
    res = {"test_questions": len(items), "prior": {"accuracy": prior["accuracy"]}, "models": {}}
    for name, path in dirs.items():
        acc = accuracy(str(path), items, desc=f"eval {name}")
        res["models"][name] = {"path": str(path), "accuracy": acc["accuracy"], "examples": acc["examples"][:3]}
    return res


def print_summary(out: Path, results: dict) -> None:
    print()
    _say(f"done in {results['wall_seconds']} s; everything is in {out}/")
    print(f"  easy-vqa test accuracy (greedy exact match, first {results['test_questions']} test questions):")
    for name, r in results["models"].items():
        print(f"    {name:22s} {100 * r['accuracy']:5.1f}%   {r['path']}")
    if "prior" in results:  # a student at this figure has not learnt to use the image
        print(f"    {'question-only prior':22s} {100 * results['prior']['accuracy']:5.1f}%   (most frequent train "
              "answer per question, image unseen)")
    print(f"  training logs: {out}/runs/*/train_log.jsonl   summary: {out / 'quickstart.json'}")
    print(f"  distilled student (plain transformers dir): {out / 'student-genrecal'}")
    if "export" in results:
        print(f"  exported artifacts (each with genrecal_manifest.json): {results['export']['dir']}/")
    print(f"  open the demo: genrecal-demo --teacher {out / 'teacher'} --student {out / 'student-genrecal'}")

