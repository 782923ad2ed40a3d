from pathlib import Path

import pytest

from genrecal.distill.config import ConfigError, DistillConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    cfg = load_config(str(path), {"student": "s", "teacher": "t", "data": "d", "out": "o"})
    assert sum(cfg.stage_steps().values()) == cfg.max_steps


def test_unknown_key_and_bad_values(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("lr: 1e-4\nlearning_rate: 3\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(str(bad), {})
    with pytest.raises(ConfigError, match="method"):
        DistillConfig(student="s", method="magic")
    with pytest.raises(ConfigError, match="needs --teacher"):
        DistillConfig(student="s", method="uld")
    with pytest.raises(ConfigError, match="stage"):
        DistillConfig(student="s", teacher="t", stages=("align", "polish"))


def test_budget_split_counts_every_step():
    for n, want in [(3, (1, 1, 1)), (6, (1, 4, 1)), (7, (1, 4, 2)), (20, (4, 12, 4)), (300, (60, 180, 60))]:
        steps = DistillConfig(student="s", teacher="t", max_steps=n).stage_steps()
        assert tuple(steps.values()) == want and sum(steps.values()) == n
    with pytest.raises(ConfigError, match="every stage"):
        DistillConfig(student="s", teacher="t", max_steps=2).stage_steps()
    assert DistillConfig(student="s", teacher="t", max_steps=300, stages=("distill", "sft")).stage_steps() == {
        "distill": 225, "sft": 75}


def test_distill_stage_losses_follow_the_knobs():
    from genrecal.distill.stages import build_stage

    default = build_stage("distill", DistillConfig(out="x", teacher="t"))
    assert default.losses == ("ar", "kl", "sft", "reg") and default.train_recal
    assert default.student_parts == ("layers", "norm")
    teacher_only = build_stage("distill", DistillConfig(out="x", teacher="t", sft_in_distill=False, reg_in_distill=False,
                                                        distill_train=("layers", "head", "embed")))
    assert teacher_only.losses == ("ar", "kl")
    assert teacher_only.student_parts == ("layers", "embed")  # only L_sft reaches the student's head
    frozen = build_stage("distill", DistillConfig(out="x", teacher="t", recal_train_in_distill=False))
    assert frozen.losses == ("ar", "kl", "sft") and not frozen.train_recal
    assert build_stage("align", DistillConfig(out="x", teacher="t")).losses == ("ar", "kl", "reg")
    assert build_stage("sft", DistillConfig(out="x", teacher="t")).losses == ("sft",)
