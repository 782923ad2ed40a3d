"""The recal_answer_input knob and the shuffled-question diagnostic, on tiny real models."""
import json
import math

import pytest
import torch

from genrecal.cli import main
from genrecal.data.render import collate
from genrecal.data.samples import load_samples
from genrecal.distill.config import ConfigError, DistillConfig
from genrecal.distill.diagnostics import shuffle_rise
from genrecal.distill.models import load_vlm
from genrecal.distill.objective import DistillObjective, teacher_answer_inputs, teacher_features
from genrecal.distill.pairs import render_pair
from genrecal.distill.recalibrator import Recalibrator
from genrecal.distill.stages import build_stage


@pytest.fixture(scope="module")
def setup(zoo_dir, evqa_train):
    teacher, student = load_vlm(zoo_dir("llava"), "teacher"), load_vlm(zoo_dir("qwen2_vl"), "student")
    samples = load_samples(evqa_train)[:4]
    return teacher, student, samples


def _batches(setup, order):
    teacher, student, samples = setup
    pairs = [render_pair(samples[i], student, teacher, 4096) for i in order]
    return (collate([p.student for p in pairs], student.tokenizer.pad_token_id),
            collate([p.teacher for p in pairs], teacher.tokenizer.pad_token_id))


def _objective(setup, **cfg):
    teacher, student, _ = setup
    torch.manual_seed(0)
    recal = Recalibrator.from_models(teacher.model, student.model, student.family.name)
    config = DistillConfig(student="s", teacher="t", **cfg)
    return DistillObjective(student.model, recal, config, (len(student.tokenizer), len(teacher.tokenizer))), config


def _run(setup, objective, config, s_batch, t_batch, keep=True):
    teacher = setup[0].model
    feats = teacher_features(teacher, t_batch)
    answers = teacher_answer_inputs(teacher, t_batch, feats, config.recal_answer_input)
    with torch.no_grad():
        return objective(build_stage("align", config), s_batch, t_batch, feats, teacher.get_output_embeddings(),
                         keep_attention=keep, t_answer=answers)


def test_shuffled_rise_is_the_loss_of_a_mismatched_batch(setup):
    objective, config = _objective(setup)
    s_batch, t_batch = _batches(setup, [0, 1, 2, 3])
    terms = _run(setup, objective, config, s_batch, t_batch)
    ar, shuffled = objective.shuffle
    assert ar == pytest.approx(float(terms["ar"]), abs=1e-6)
    # the same figure, computed by hand: student sample b+1 paired with teacher sample b
    s_rolled, _ = _batches(setup, [1, 2, 3, 0])
    mismatched = _run(setup, objective, config, s_rolled, t_batch, keep=False)
    assert shuffled == pytest.approx(float(mismatched["ar"]), abs=1e-4)
    assert abs(shuffled - ar) > 1e-4  # different images: the student features differ


def test_shuffled_rise_is_zero_for_identical_samples_and_absent_at_batch_size_one(setup):
    objective, config = _objective(setup)
    s_batch, t_batch = _batches(setup, [2, 2, 2])
    _run(setup, objective, config, s_batch, t_batch)
    ar, shuffled = objective.shuffle
    assert shuffled == pytest.approx(ar, abs=1e-5)
    s_one, t_one = _batches(setup, [2])
    _run(setup, objective, config, s_one, t_one)
    assert objective.shuffle is None and objective.attention_mass is not None
    _run(setup, objective, config, s_batch, t_batch, keep=False)  # not a diagnostic step
    assert objective.shuffle is None


def test_embeddings_knob_changes_what_the_recalibrator_reads(setup):
    teacher = setup[0].model
    s_batch, t_batch = _batches(setup, [0, 1])
    inputs = {}
    for kind in ("hidden", "embedding"):
        objective, config = _objective(setup, recal_answer_input=kind)
        seen = []
        hook = objective.recal.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
        _run(setup, objective, config, s_batch, t_batch, keep=False)
        hook.remove()
        inputs[kind] = seen  # [main path, regularisation path]
    q = int(s_batch["answer_start"][0])
    s, e = int(t_batch["answer_start"][0]), int(t_batch["answer_end"][0])
    n = e - s
    main_states, main_embeds = inputs["hidden"][0][0], inputs["embedding"][0][0]
    torch.testing.assert_close(main_states[:q], main_embeds[:q])  # the student's question part is the same
    assert not torch.allclose(main_states[q:q + n], main_embeds[q:q + n])
    proj = objective.recal.proj_pre
    with torch.no_grad():
        want = proj(teacher.get_input_embeddings()(t_batch["input_ids"][0, s:e]))
        states = proj(teacher_features(teacher, t_batch)[0, s:e])
    torch.testing.assert_close(main_embeds[q:q + n], want)
    torch.testing.assert_close(main_states[q:q + n], states)
    reg_embeds = inputs["embedding"][1][0]  # regularisation path: teacher question states, answer embeddings
    torch.testing.assert_close(reg_embeds[s:e], want)
    torch.testing.assert_close(reg_embeds[:s], inputs["hidden"][1][0][:s])


def test_bad_answer_features_value():
    with pytest.raises(ConfigError, match="recal-answer-input"):
        DistillConfig(student="s", teacher="t", recal_answer_input="states")


def _distill(zoo_dir, evqa, out, *extra):
    return main(["distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"), "--data", evqa,
                 "--out", str(out), "--max-steps", "3", "--lr", "1e-3", "--no-progress", *extra])


def _log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_embeddings_run_trains_is_saved_and_resume_refuses_a_change(zoo_dir, evqa_train, tmp_path, capsys):
    out = tmp_path / "emb"
    assert _distill(zoo_dir, evqa_train, out, "--batch-size", "4", "--recal-answer-input", "embedding",
                    "--attn-mass-every", "2") == 0
    lines = _log(out)
    assert [ln["stage"] for ln in lines] == ["align", "distill", "sft"]
    assert all(math.isfinite(ln["ar"]) for ln in lines[:2])
    assert isinstance(lines[0]["ar_shuffle_rise"], float) and "ar_shuffle_rise" not in lines[1]
    assert lines[0]["ar_shuffled"] == pytest.approx(lines[0]["ar"] + lines[0]["ar_shuffle_rise"], abs=1e-4)
    assert "ar_shuffle_rise" not in lines[2]  # the sft stage has no Recalibrator (global step 2)
    assert json.loads((out / "run_config.json").read_text())["recal_answer_input"] == "embedding"
    summary = shuffle_rise(out / "train_log.jsonl")
    assert summary["align"]["mean"] == lines[0]["ar_shuffle_rise"] and "distill" not in summary
    capsys.readouterr()
    assert _distill(zoo_dir, evqa_train, out, "--batch-size", "4", "--attn-mass-every", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert "recal_answer_input" in err and "Traceback" not in err


def test_batch_size_one_logs_null_not_a_number(zoo_dir, evqa_train, tmp_path):
    out = tmp_path / "one"
    assert _distill(zoo_dir, evqa_train, out, "--batch-size", "1", "--attn-mass-every", "1",
                    "--stages", "align,distill") == 0
    lines = _log(out)
    assert all(ln["ar_shuffle_rise"] is None and ln["ar_shuffled"] is None for ln in lines)
    assert all("attn_q_mass" in ln for ln in lines)
    summary = shuffle_rise(out / "train_log.jsonl")
    assert math.isnan(summary["align"]["mean"]) and summary["align"]["null_steps"] == 1
    assert summary["distill"]["steps"] == 0 and summary["distill"]["null_steps"] == 2
