"""The scenes quality benchmark's parts: probe labels, run specs at equal budgets, GOLD's inputs, the report."""
from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest

from genrecal.experiments import quality_scenes as qs
from genrecal.experiments.quality_report import SCENES as report
from genrecal.data import scenes


def test_probe_labels_follow_the_scene():
    from genrecal.experiments.quality_scenes_vision import GRID, HEADS, labels

    rng = random.Random(3)
    for _ in range(50):
        objs = scenes.sample_scene(rng)
        y = labels(objs)
        assert y["count"] == [len(objs) - 2]
        assert {k: len(v) for k, v in y.items() if k in HEADS} == {k: p for k, (p, _) in HEADS.items()}
        present = [c for c in y["column"] if c != GRID]
        assert len(present) == len(objs)
        for o in objs:  # the colour's cell holds that object's attributes (unless two centres share it)
            c = list(scenes.COLORS).index(o.color)
            cell = y["row"][c] * GRID + y["column"][c]
            if not y["crowded"][cell]:
                assert y["color"][cell] == c and y["shape"][cell] == scenes.SHAPES.index(o.shape)


def test_every_method_gets_the_same_start_data_and_step_budget(tmp_path):
    ctx = {"out": tmp_path, "test": tmp_path / "test.json",
           "teacher": {"path": "T", "recipe": {"t": 1}}, "start": {"path": "S", "recipe": {"s": 1}},
           "data": {"a-gold": tmp_path / "a.json", "b-teacher-answers": tmp_path / "b.json"}}
    for regime in qs.REGIMES:
        specs = [qs.spec(qs.QUICK, ctx, regime, name, 0, 1) for name in qs.METHODS]
        budgets = {(s["steps"], s["batch_size"]) for s in specs}
        assert budgets == {(qs.QUICK.budget_steps, qs.QUICK.batch_size)}
        for s in specs:
            run = s.get("fields") or s["gold"]
            assert run["student"] == "S" and Path(run["data"]) == ctx["data"][regime]
            assert run.get("max_steps", run.get("steps")) == qs.QUICK.budget_steps
            assert (run.get("teacher") == "T") == (s["name"] != "sft")
        gold = {s["name"]: s["gold"]["lmbda"] for s in specs if "gold" in s}
        assert gold == {"gold": 0.0, "gold-on-policy": 0.5}
    from genrecal.experiments.quality_scenes_runs import run_key

    a, b = (qs.spec(qs.QUICK, ctx, "a-gold", "sft", seed, 1) for seed in (0, 1))
    assert run_key(a) != run_key(b) and run_key(a) == run_key({**a, "threads": 2})


def test_gold_dataset_and_tokenizer_checks(tmp_path, zoo_dir):
    from transformers import AutoProcessor

    from genrecal.experiments.quality_scenes_gold import byte_level_bpe, dataset

    data = scenes.write_scenes(tmp_path / "d", images=3, questions_per_image=2, seed=0)
    ds = dataset(str(data / "data.json"), limit=4)
    row = ds[0]
    assert len(ds) == 4 and row["prompt"][0]["role"] == "user" and "<image>" not in row["prompt"][0]["content"]
    assert row["completion"][0]["content"] and len(row["images"]) == 1
    assert byte_level_bpe(AutoProcessor.from_pretrained(zoo_dir("qwen2_vl")).tokenizer)
    assert not byte_level_bpe(AutoProcessor.from_pretrained(zoo_dir("llava")).tokenizer)  # WordPiece


def _result(runs, criteria=None):
    teacher = {"scores": {"accuracy": 0.8, "by_kind": {"count": 0.9}, "easy_vqa": {"accuracy": 0.7}}}
    start = {"scores": {"accuracy": 0.3, "by_kind": {}}}
    out = {"command": "c", "plan": asdict(qs.QUICK), "seeds": [0, 1], "criteria_targets": qs.CRITERIA,
           "teacher": teacher, "start": start, "runs": runs, "skipped_methods": {"gold": "trl missing"}}
    if criteria:
        out["criteria"] = criteria
    return out


def test_report_states_criteria_first_then_tables_per_regime(tmp_path):
    md = report.markdown(_result([]))
    assert "pre-registered" in md and "(not measured yet)" in md and "Regime a-gold" not in md
    runs = [{"name": n, "regime": r, "seed": s, "accuracy": acc + 0.01 * s, "by_kind": {"count": acc},
             "seconds_per_step": 0.5, "peak_rss_mb": 900.0, "easy_vqa": {"accuracy": 0.5}}
            for r in qs.REGIMES for n, acc in (("sft", 0.5), ("uld", 0.55), ("genrecal", 0.7)) for s in (0, 1)]
    summary = report.summarize(runs, 0.8)
    assert summary["a-gold"]["genrecal"]["gap_closed"] == pytest.approx((0.705 - 0.505) / (0.8 - 0.505))
    assert report.verdict(summary)["b-teacher-answers"] == {"genrecal>uld>sft": True, "genrecal_closes_half_gap": True}
    criteria = {"depth": {"student_layers": 8, "recalibrator_layers": 2, "ratio": 4.0, "met": True},
                "student_probe": {"count": 0.9, "color": 0.8, "met": False}, "teacher_probe": {"count": 0.95, "met": True},
                "sft_unlimited": {"accuracy": 0.76, "teacher": 0.8, "ratio": 0.95, "steps": 30, "images": 160,
                                  "met": True}}
    result = {**_result(runs, criteria), "summary": summary}
    paths = report.write_all(result, tmp_path)
    md = paths["md"].read_text()
    assert md.index("Regime criteria") < md.index("## Regime a-gold") < md.index("## Regime b-teacher-answers")
    assert "| 8 / 2 = 4 | **yes** |" in md and "color 80%" in md and "= 95 % | **yes** |" in md
    assert "not run: `gold`: trl missing" in md and "PARTIAL" not in md
    assert "**Regime criteria not met (student_probe)**" in md
    assert json.loads(paths["json"].read_text())["summary"]["a-gold"]["sft"]["peak_rss_mb"] == 900.0
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "PARTIAL" in report.markdown({**result, "summary": None})


def test_cli_parses_methods_and_regimes(capsys):
    parser = __import__("argparse").ArgumentParser()
    qs.add_arguments(parser)
    args = parser.parse_args(["--quick", "--methods", "sft,gold", "--regimes", "a-gold", "--out", "o"])
    assert args.methods == ["sft", "gold"] and args.regimes == ["a-gold"]
    assert qs.command_line(args) == "genrecal-bench quality-scenes --quick --methods sft,gold --regimes a-gold --out o"
    with pytest.raises(SystemExit):
        parser.parse_args(["--methods", "dpo"])
    assert "unknown method(s) ['dpo']" in capsys.readouterr().err


def test_genrecal_bench_wires_quality_scenes():
    from genrecal.benchmarks.cli import build_parser
    from genrecal.experiments.cli import COMMANDS

    args = build_parser().parse_args(["quality-scenes", "--quick", "--jobs", "2", "--out", "o"])
    assert args.command == "quality-scenes" and args.jobs == 2 and args.quick and "quality-scenes" in COMMANDS
    assert qs.command_line(args) == "genrecal-bench quality-scenes --quick --jobs 2 --out o"


def test_scoring_and_teacher_answers_on_a_real_tiny_model(zoo_dir, tmp_path):
    from genrecal.experiments.quality_scenes_runs import items, score, teacher_answer_data, write_data

    plan = qs.QUICK
    gold = write_data(tmp_path, "budget", plan, images=4)
    test = write_data(tmp_path, "test", plan, images=2)
    assert all(t["kind"] != "exact" for _, t, _ in items(test))  # held-out set: scenes only
    kinds = {t["kind"] for _, t, _ in items(gold)}
    assert kinds <= {*scenes.KINDS, "exact"}
    model = zoo_dir("qwen2_vl")
    got = score(model, items(test), [])
    assert got["n"] == len(items(test)) and 0.0 <= got["accuracy"] <= 1.0
    assert set(got["by_kind"]) == {t["kind"] for _, t, _ in items(test)} and "easy_vqa" not in got
    path, labels = teacher_answer_data(model, gold, tmp_path / "answers", limit=5)
    answered = json.loads(path.read_text())
    assert 1 <= len(answered) <= 5 and labels["n"] == len(answered) and 0.0 <= labels["accuracy"] <= 1.0
    questions = [r["conversations"][0]["value"] for r in json.loads(gold.read_text())[:5]]
    assert [r["conversations"][0]["value"] for r in answered] == questions[:len(answered)]  # same prompts
