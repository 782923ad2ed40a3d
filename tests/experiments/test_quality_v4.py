"""quality-v4's parts: the question-only prior, the criteria and gate checks, the plan, run specs and reports."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from genrecal.data import scenes
from genrecal.data.prior import scene_prior, text_prior
from genrecal.experiments import quality_v4 as v4
from genrecal.experiments import quality_v4_report as report
from genrecal.experiments.quality_v4_criteria import checks, gate
from genrecal.experiments.quality_v4_plan import FULL, KIND_WEIGHTS, QUICK, V4Plan


def _t(kind, **kw):
    return {"kind": kind, **kw}


def test_scene_prior_is_the_most_frequent_train_answer_per_kind_and_relation_axis():
    lr, ab = "is the red circle left or right of the blue square?", "is the red circle above or below the blue square?"
    train = [("how many?", _t("count", count=3)), ("how many?", _t("count", count=3)), ("how many?", _t("count", count=2)),
             ("what color?", _t("color", color="red")), ("what color?", _t("color", color="red")),
             ("what color?", _t("color", color="blue")),
             (lr, _t("relation", relation="right")), (lr, _t("relation", relation="right")),
             (lr, _t("relation", relation="left")), (ab, _t("relation", relation="above"))]
    test = [("how many?", _t("count", count=3)), ("how many?", _t("count", count=2)),
            ("what color?", _t("color", color="red")), ("what color?", _t("color", color="green")),
            (lr, _t("relation", relation="right")), (ab, _t("relation", relation="below")),
            ("what size?", _t("size", size="small"))]  # a kind never seen in training counts as wrong
    p = scene_prior(train, test)
    assert p["by_kind"] == {"color": 0.5, "count": 0.5, "relation": 0.5, "size": 0.0}
    assert p["accuracy"] == pytest.approx(3 / 7) and p["n"] == 7
    assert p["answers"] == {"color": "red", "count": "3", "relation above-below": "above", "relation left-right": "right"}


def test_text_prior_groups_by_question_text():
    train = [("Is it red?", "no"), ("is it red?", "No"), ("is it red?", "yes"), ("what shape?", "circle")]
    assert text_prior(train, [("is it red?", "no"), ("what shape?", "square")])["accuracy"] == 0.5


def test_prior_of_generated_scenes_sits_above_chance_and_below_certainty(tmp_path):
    from genrecal.experiments.quality_v4_runs import prior, write_data

    plan = QUICK
    train, test = write_data(tmp_path, "b1", plan), write_data(tmp_path, "test", plan)
    recs = json.loads(train.read_text())
    assert {r["truth"]["kind"] for r in recs} <= set(KIND_WEIGHTS)  # relation and describe dropped
    assert all(2 <= len(r["objects"]) <= 3 for r in recs)
    p = prior(train, test)
    assert 0.0 < p["accuracy"] < 1.0 and set(p["by_kind"]) <= {"count", "color", "shape", "size"}


def test_objects_range_and_default_draw_unchanged():
    a = list(scenes.generate(20, seed=5))
    b = list(scenes.generate(20, seed=5, objects=(2, 5)))
    assert [o for _, o, _ in a] == [o for _, o, _ in b]  # the default draws the scenes it always drew
    rng = random.Random(5)
    assert [o for _, o, _ in a][0] == scenes.sample_scene(rng)
    assert {len(o) for _, o, _ in scenes.generate(40, seed=1, objects=(2, 3))} == {2, 3}


def test_shuffled_start_data_keeps_every_answer_and_moves_the_images(tmp_path):
    from genrecal.experiments.quality_v4_runs import shuffle_images, write_data

    plan = V4Plan(**{**QUICK.__dict__, "pretrain_shuffled": True})
    plain = json.loads(write_data(tmp_path, "pretrain", QUICK).read_text())
    shuffled = json.loads(write_data(tmp_path, "pretrain", plan).read_text())
    assert [r["conversations"] for r in shuffled] == [r["conversations"] for r in plain]
    assert sorted(r["image"] for r in shuffled) == sorted(r["image"] for r in plain)
    assert sum(a["image"] != b["image"] for a, b in zip(shuffled, plain)) > len(plain) // 2
    assert shuffle_images(plain, 0) == shuffle_images(plain, 0)  # seeded


def test_in_kind_names_a_word_of_the_asked_kind():
    from genrecal.experiments.quality_v4_runs import in_kind

    assert in_kind("there are 3 shapes.", "count") and in_kind("three", "count") and not in_kind("red", "count")
    assert in_kind("the circle is red.", "color") and not in_kind("the green rectangle.", "size")
    assert in_kind("small", "size") and not in_kind("", "shape")


def _scores(acc, in_kind=1.0, **by_kind):
    return {"accuracy": acc, "in_kind": in_kind, "by_kind": by_kind}


def test_criteria_checks_follow_the_registered_targets():
    prior = {"accuracy": 0.40, "by_kind": {"count": 0.5, "color": 0.2}}
    good = checks(prior, _scores(0.45, 0.97), _scores(0.85, count=0.99, color=0.7), sft_b1=0.55)
    assert [c["met"] for c in good] == [True, True, True, True, True, None, True]
    bad = checks(prior, _scores(0.55, 0.90), _scores(0.62, count=0.55, color=0.7), sft_b1=0.45)
    assert [c["met"] for c in bad] == [True, False, False, False, False, None, False]
    # the teacher above 80 % but less than 10 points above SFT
    assert checks(prior, None, _scores(0.82, count=0.9, color=0.9), sft_b1=0.75)[4]["met"] is False
    early = checks(prior, None, None, None)
    assert [c["met"] for c in early] == [True, None, None, None, None, None, None]
    assert checks(prior, None, _scores(0.85), None, cross_teacher=_scores(0.78))[5]["met"] is False


def test_gate_needs_the_margin_and_every_kd_seed_above_every_sft_seed():
    assert gate([0.60, 0.62, 0.61], [0.55, 0.57, 0.56])["holds"]
    near = gate([0.59, 0.60, 0.58], [0.57, 0.57, 0.56])
    assert not near["holds"] and near["every_kd_above_every_sft"] and near["margin"] == pytest.approx(0.0233, abs=1e-3)
    overlap = gate([0.70, 0.62, 0.70], [0.55, 0.63, 0.56])  # margin 9.3 points, one SFT seed above one KD seed
    assert not overlap["holds"] and overlap["margin"] > 0.03
    with pytest.raises(ValueError):
        gate([], [0.5])


def test_plan_budget_and_validation():
    assert FULL.budget_steps == 282  # ceil(300 images x 3 questions x 10 epochs / 32)
    assert QUICK.budget_steps < FULL.budget_steps and QUICK.teacher_steps < FULL.teacher_steps
    with pytest.raises(ValueError, match="objects"):
        V4Plan(objects=(3, 2))
    assert FULL.data_recipe("b1")["images"] == 300 and FULL.data_recipe("test") != FULL.data_recipe("b1")
    assert v4.parse_set(["b1_images=150", "temperature=2", "objects=2-4", "pretrain_shuffled=true"]) == \
        {"b1_images": 150, "temperature": 2.0, "objects": (2, 4), "pretrain_shuffled": True}
    with pytest.raises(Exception, match="V4Plan field"):
        v4.parse_set(["no_such=1"])


def _ctx(tmp_path):
    data = {n: tmp_path / f"{n}.json" for n in ("b1", "test", "b1-labels+teacher", "b2-labels+teacher")}
    return {"out": tmp_path, "data": data, "teacher": {"path": "T", "recipe": {"t": 1}},
            "start": {"path": "S", "recipe": {"s": 1}}}


def test_every_method_gets_the_same_start_steps_and_lr(tmp_path):
    from genrecal.experiments.quality_scenes_runs import run_key

    ctx = _ctx(tmp_path)
    for budget in v4.BUDGETS:
        specs = {n: v4.spec(FULL, ctx, budget, n, 0, 1) for n in v4.METHODS}
        for name, s in specs.items():
            f = s["fields"]
            assert f["student"] == "S" and f["lr"] == FULL.lr and f["batch_size"] == FULL.batch_size
            assert (f.get("teacher") == "T") == (f["method"] != "sft")
            if name == "sft-stage3":  # GenRecal's stage 3: 20 % of the steps
                assert abs(f["max_steps"] - 0.2 * FULL.budget_steps) <= 1
            else:
                assert f["max_steps"] == FULL.budget_steps
        assert Path(specs["sft"]["fields"]["data"]) == ctx["data"]["b1"]  # SFT sees the labels only
        assert Path(specs["seq-kd"]["fields"]["data"]) == ctx["data"][f"{budget}-labels+teacher"]
        assert specs["kd"]["fields"]["temperature"] == FULL.temperature
    assert Path(v4.spec(FULL, ctx, "b1", "kd", 0, 1)["fields"]["data"]) == ctx["data"]["b1"]
    assert Path(v4.spec(FULL, ctx, "b2", "kd", 0, 1)["fields"]["data"]) == ctx["data"]["b2-labels+teacher"]
    a, b = (v4.spec(FULL, ctx, "b1", "sft", seed, 1) for seed in (0, 1))
    assert run_key(a) != run_key(b) and run_key(a) == run_key({**a, "threads": 2})


def _attempt(kd, sft):
    runs = [{"name": n, "seed": s, "accuracy": a, "by_kind": {"count": a}, "in_kind": 1.0, "seconds_per_step": 0.4,
             "peak_rss_mb": 900.0} for n, accs in (("sft", sft), ("kd", kd)) for s, a in enumerate(accs)]
    prior = {"accuracy": 0.41, "by_kind": {"count": 0.5}}
    model = {"scores": _scores(0.85, 0.99, count=0.99)}
    return {"plan": FULL.to_dict(), "changes": {"b1_images": 150}, "seeds": [0, 1, 2], "prior": prior,
            "teacher": model, "start": {"scores": _scores(0.40, 0.98, count=0.5)}, "runs": runs,
            "pilot": {"kd": kd[0], "sft": sft[0], "margin": kd[0] - sft[0]}, "gate": gate(kd, sft),
            "criteria": checks(prior, _scores(0.4, 0.98), _scores(0.85, count=0.99), sum(sft) / 3)}


def test_gate_report_prints_the_prior_every_seed_and_the_verdict():
    md = report.gate_markdown({"attempts": [_attempt([0.6, 0.61, 0.62], [0.5, 0.52, 0.51])]})
    assert "question-only prior" in md and "| 41.0% |" in md and "`b1_images=150`" in md
    assert "60.0% 61.0% 62.0%" in md and "gate HOLDS" in md and "Pilot (seed 0)" in md
    assert "gate FAILS" in report.gate_markdown({"attempts": [_attempt([0.5, 0.52, 0.5], [0.5, 0.51, 0.5])]})


def test_comparison_report_has_the_prior_and_gap_closed(tmp_path):
    a = _attempt([0.6, 0.6, 0.6], [0.5, 0.5, 0.5])
    runs = [{**r, "regime": "b1"} for r in a["runs"]]
    runs += [{**r, "name": "genrecal", "regime": "b1", "accuracy": 0.55} for r in a["runs"] if r["name"] == "sft"]
    result = {"prior": a["prior"], "teacher": {"scores": _scores(0.9)}, "start": a["start"], "gate": a,
              "criteria": a["criteria"], "runs": runs}
    result["summary"] = report.summarize(result)
    g = result["summary"]["b1"]["genrecal"]
    assert g["gap_closed"] == pytest.approx(0.125) and g["of_kd_gain"] == pytest.approx(0.5)
    assert report.verdict(result["summary"])["b1"]["genrecal>=kd"] is False
    paths = report.write_all(result, tmp_path)
    md = paths["md"].read_text()
    assert "| 41.0% |" in md and "## Budget B1" in md and "PARTIAL" not in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_genrecal_bench_wires_quality_v4():
    from genrecal.benchmarks.cli import build_parser

    args = build_parser().parse_args(["quality-v4", "--stage", "gate", "--set", "b1_images=150", "--out", "o"])
    assert args.command == "quality-v4" and args.stage == "gate" and args.set == ["b1_images=150"]


def test_widened_teacher_shares_tokenizer_and_vision_tower(zoo_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genrecal.experiments.quality_v4_models import widen_text

    src = Path(zoo_dir("qwen2_vl"))
    out = widen_text(src, tmp_path / "wide", hidden=128, layers=3)
    wide, small = (AutoModelForImageTextToText.from_pretrained(p) for p in (out, src))
    assert wide.config.text_config.hidden_size == 128 and wide.config.text_config.num_hidden_layers == 3
    assert AutoProcessor.from_pretrained(out).tokenizer.get_vocab() == AutoProcessor.from_pretrained(src).tokenizer.get_vocab()
    ws, ss = wide.state_dict(), small.state_dict()
    patch = [k for k in ss if "patch_embed" in k][0]
    assert torch.equal(ws[patch], ss[patch])
    assert sum(p.numel() for p in wide.model.language_model.parameters()) > \
        2 * sum(p.numel() for p in small.model.language_model.parameters())
