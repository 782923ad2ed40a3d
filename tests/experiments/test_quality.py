"""The quality benchmark's parts: the easy-vqa-style renderer, gap-closed arithmetic, cache keys, the report."""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, replace

import numpy as np
import pytest

from genrecal.experiments import quality
from genrecal.experiments.quality_report import EASY_VQA as quality_report
from genrecal.experiments.quality_report import gap_closed
from genrecal.data import shapes


def test_renderer_uses_exactly_easy_vqa_questions_and_consistent_answers():
    import easy_vqa

    easy = set(easy_vqa.get_train_questions()[0])
    seen, rng = set(), random.Random(0)
    for _ in range(3000):
        shape, color = rng.choice(shapes.SHAPES), rng.choice(list(shapes.COLORS))
        q, a = shapes.question(shape, color, rng)
        seen.add(q)
        assert q in easy
        if q.startswith("what shape") or (q.startswith("what is the") and "color" not in q):
            assert a == shape
        elif "color" in q:
            assert a == color
        else:  # yes/no: the asked value is the image's own iff the answer says so (flipped when negated)
            asked = next(w for w in (*shapes.SHAPES, *shapes.COLORS) if f" {w}" in q)
            negated = " not " in q or q.startswith("is no ")
            assert (a == "yes") == ((asked in (shape, color)) != negated)
    assert len(seen) > 90  # nearly all of easy-vqa's 107 distinct questions come up


def test_renderer_draws_the_named_shape_in_the_named_colour():
    for shape in shapes.SHAPES:
        for color, rgb in shapes.COLORS.items():
            im = np.asarray(shapes.draw(shape, color, random.Random(7)))
            assert im.shape == (64, 64, 3)
            counts = Counter(map(tuple, im.reshape(-1, 3).tolist()))
            bg, _ = counts.most_common(1)[0]
            assert all(230 <= c <= 255 for c in bg)
            fill = [n for px, n in counts.items() if px == rgb]
            assert fill and fill[0] >= 30  # at least an 8x8 shape's interior in the exact colour
    # a circle fills ~pi/4 of its box, a triangle ~1/2, a rectangle all of it
    rng = random.Random(0)
    area = {s: np.mean([(np.asarray(shapes.draw(s, "black", rng)).sum(-1) < 300).mean() for _ in range(200)])
            for s in shapes.SHAPES}
    assert area["triangle"] < area["circle"] < area["rectangle"]


def test_question_mix_follows_kind_weights():
    def share(weights):
        rng = random.Random(1)
        answers = [shapes.question("circle", "red", rng, weights)[1] for _ in range(4000)]
        return sum(a in ("yes", "no") for a in answers) / len(answers)

    assert share(None) == pytest.approx(shapes.KIND_WEIGHTS["yes_no"], abs=0.03)  # easy-vqa's mix by default
    assert share({"yes_no": 0.4, "shape": 0.3, "color": 0.3}) == pytest.approx(0.4, abs=0.03)
    assert share({"shape": 1.0}) == 0.0


def test_write_shapes_is_deterministic_llava_json(tmp_path):
    from genrecal.data import load_samples

    a = shapes.write_shapes(tmp_path / "a", images=5, questions_per_image=3, seed=2)
    b = shapes.write_shapes(tmp_path / "b", images=5, questions_per_image=3, seed=2)
    assert (a / "data.json").read_text() == (b / "data.json").read_text()
    assert len(list((a / "images").iterdir())) == 5
    samples = load_samples(a)
    assert 5 <= len(samples) <= 15 and all(s.answer for s in samples)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        shapes.write_shapes(tmp_path / "c", images=1)


def test_gap_closed_and_summary():
    assert gap_closed(0.75, 0.70, 0.80) == pytest.approx(0.5)
    assert gap_closed(0.65, 0.70, 0.80) == pytest.approx(-0.5)
    assert gap_closed(0.75, 0.80, 0.80) is None  # no gap: nothing to close
    runs = [{"name": m, "method": m, "seed": s, "accuracy": acc, "train_seconds": 1.0, "steps": 10, "samples": 80,
             "overrides": {}, "attention_mass": None}
            for m, accs in (("sft", (0.60, 0.62, 0.64)), ("uld", (0.61, 0.63, 0.65)), ("genrecal", (0.7, 0.7, 0.7)))
            for s, acc in enumerate(accs)]
    summ = quality_report.summarize(runs, teacher_acc=0.82)
    assert summ["sft"]["accuracy_mean"] == pytest.approx(0.62)
    assert summ["sft"]["accuracy_sd"] == pytest.approx(0.02)  # sample sd over seeds
    assert summ["sft"]["gap_closed"] == pytest.approx(0.0)
    assert summ["genrecal"]["gap_closed"] == pytest.approx(0.4)
    v = quality_report.verdict(summ, 0.82)
    assert v == {"genrecal>uld>sft": True, "genrecal_closes_half_gap": False, "teacher_beats_sft_by_10": True}


def test_cache_key_follows_the_recipe_only():
    plan = quality.FULL
    key = quality.cache_key(quality.teacher_recipe(plan))
    assert key == quality.cache_key(dict(reversed(list(quality.teacher_recipe(plan).items()))))
    assert key == quality.cache_key(quality.teacher_recipe(replace(plan, budget_steps=7, student_size="base")))
    assert key != quality.cache_key(quality.teacher_recipe(replace(plan, teacher_steps=plan.teacher_steps + 1)))
    assert quality.cache_key(quality.pretrain_recipe(plan)) != quality.cache_key(
        quality.pretrain_recipe(replace(plan, pretrain_images=10)))
    assert len(key) == 12 and all(c in "0123456789abcdef" for c in key)


def test_report_files_from_a_result(tmp_path):
    runs = [{"name": n, "method": m, "seed": s, "accuracy": 0.6 + 0.01 * i + 0.005 * s, "train_seconds": 2.0,
             "eval_seconds": 1.0, "steps": 10, "samples": 80, "stage_steps": {}, "overrides": o,
             "attention_mass": {"align_mean": 0.4, "distill_mean": 0.3} if m == "genrecal" else None}
            for i, (n, m, o) in enumerate((("sft", "sft", {}), ("uld", "uld", {}), ("genrecal", "genrecal", {}),
                                           ("recal-random-init", "genrecal", {"recal_init": "random"})))
            for s in (0, 1)]
    teacher = {"accuracy": 0.8, "family": "llava/base", "train_seconds": 5.0, "steps": 20, "samples": 160,
               "by_kind": {"yes_no": 0.8, "shape": 0.7, "color": 0.9}}
    start = {"accuracy": 0.55, "train_seconds": 1.0, "steps": 3, "samples": 24}
    summary = quality_report.summarize(runs, 0.8)
    result = {"command": "genrecal-bench quality --quick --out x", "seeds": [0, 1], "runs": runs, "summary": summary,
              "teacher": teacher, "pretrained_student": start, "verdict": quality_report.verdict(summary, 0.8),
              "wall_seconds": 60.0, "host": {"summary": "2 CPU cores"}, "plan": asdict(quality.QUICK),
              "question_only_prior": {"accuracy": 0.67, "by_kind": {"yes_no": 0.77, "shape": 0.34, "color": 0.14}},
              "attention_mass_uniform": 0.965,
              "invocations": [{"command": "c", "wall_seconds": 60.0, "trained_runs": 8, "reused_runs": 0,
                               "teacher_reused": False, "host": "2 CPU cores"}],
              "regime": {"pair": "llava/base -> qwen2_vl/tiny", "teacher": "t", "student": "s", "budget": "b",
                         "eval": "e"}}
    paths = quality_report.write_all(result, tmp_path)
    assert json.loads(paths["json"].read_text())["summary"]["genrecal"]["attention_mass_distill"][0] == 0.3
    md = paths["md"].read_text()
    assert "| genrecal |" in md and "variant: recal-random-init" in md and "0.40 / 0.30" in md
    assert "| question-only prior (no model) | 67.0% | | 77 / 34 / 14 |" in md and "would give 0.965" in md
    assert "Note: no student scores more than 2 points above the question-only prior" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_question_only_prior_matches_easy_vqa():
    items = [("is there a red shape?", "no", ""), ("is there not a red shape?", "yes", ""),
             ("is there a red shape?", "yes", ""), ("what shape is in the image?", "unknown", "")]
    prior = quality.question_only_prior(items)
    assert prior["accuracy"] == pytest.approx(0.5)
    assert prior["by_kind"] == {"color": 0.0, "yes_no": round(2 / 3, 4)}
    assert quality.answer_kind("teal") == "color" and quality.answer_kind("circle") == "shape"


def test_prediction_kind_classifies_answer_words_only():
    from genrecal.experiments.quality_runs import prediction_kind

    assert prediction_kind(" Teal.") == "color" and prediction_kind("circle") == "shape"
    assert prediction_kind("No") == "yes_no"
    assert prediction_kind("green shape") is None and prediction_kind("") is None


def test_cli_wires_quality(capsys):
    from genrecal.benchmarks.cli import build_parser

    args = build_parser().parse_args(["quality", "--quick", "--seeds", "3,4", "--variants", "all", "--out", "o"])
    assert args.command == "quality" and args.quick and args.seeds == [3, 4]
    assert args.variants == list(quality.VARIANTS)
    assert quality.command_line(args).startswith("genrecal-bench quality --quick --seeds 3,4 --variants ")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["quality", "--variants", "nope"])
    assert "unknown variant" in capsys.readouterr().err


def test_set_changes_numbers_of_the_regime(capsys):
    from genrecal.benchmarks.cli import build_parser

    args = build_parser().parse_args(["quality", "--set", "pretrain_steps=600", "--set", "lr=5e-4", "--out", "o"])
    assert args.settings == [("pretrain_steps", 600), ("lr", 5e-4)]
    assert quality.command_line(args) == "genrecal-bench quality --set pretrain_steps=600 --set lr=0.0005 --out o"
    assert "pretrain_steps" in quality.settable() and "student_parts" not in quality.settable()
    assert build_parser().parse_args(["quality", "--set", "student_vision_steps=0"]).settings == [
        ("student_vision_steps", 0)]
    for bad in ("pretrain_steps", "student_parts=x", "nope=1", "pretrain_steps=1.5", "batch_size=0", "lr=0",
                "teacher_vision_steps=-1"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["quality", "--set", bad])
    err = capsys.readouterr().err
    assert "FIELD one of" in err and "is not an integer" in err and "must be > 0" in err and "must be >= 0" in err
