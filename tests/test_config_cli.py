"""CLI flags derived from the config dataclasses: every flag spelling users had keeps its meaning, a flag not
given leaves the YAML's value, and the help is the field's docstring."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import pytest

from genrecal.config_cli import add_flags, field_docs, from_args, given
from genrecal.distill.config import AnswerConfig, DistillConfig, load_config


def _distill(argv: list[str]) -> argparse.Namespace:
    from genrecal.cli import build_parser

    return build_parser().parse_args(["distill", *argv])


def test_every_distill_flag_users_had_parses_to_its_field(tmp_path):
    args = _distill(["--teacher", "t", "--student", "s", "--data", "d", "--out", "o", "--method", "sft",
                     "--stages", "align,sft", "--max-steps", "3", "--batch-size", "2", "--grad-accum", "2",
                     "--lr", "1e-3", "--min-lr", "1e-4", "--seed", "1", "--limit", "5", "--max-length", "64",
                     "--image-root", "r", "--dtype", "bf16", "--save-dtype", "fp16", "--teacher-device-map", "auto",
                     "--gradient-checkpointing", "off", "--attn-mass-every", "2", "--recal-answer-input", "embedding",
                     "--data-workers", "1", "--stop-after", "align", "--checkpoint-every", "7", "--resume",
                     "--dry-run", "--on-bad-sample", "skip", "--require-image", "--trust-remote-code",
                     "--no-progress", "--config", "c.yaml"])
    assert given(DistillConfig, args) == {
        "teacher": "t", "student": "s", "data": "d", "out": "o", "method": "sft", "stages": ("align", "sft"),
        "max_steps": 3, "batch_size": 2, "grad_accum": 2, "lr": 1e-3, "min_lr": 1e-4, "seed": 1, "limit": 5,
        "max_length": 64, "image_root": "r", "dtype": "bf16", "save_dtype": "fp16", "teacher_device_map": "auto",
        "gradient_checkpointing": "off", "attn_mass_every": 2, "recal_answer_input": "embedding",
        "data_workers": 1, "stop_after": "align", "checkpoint_every": 7, "resume": True, "dry_run": True,
        "on_bad_sample": "skip", "require_image": True, "trust_remote_code": True}
    assert args.config == "c.yaml" and args.no_progress


def test_flags_not_given_leave_the_yaml_and_the_defaults(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("max_steps: 9\nlr: 0.5\nrecal_train_in_distill: false\n")
    args = _distill(["--config", str(recipe), "--student", "s", "--teacher", "t", "--lr", "0.1"])
    cfg = load_config(args.config, given(DistillConfig, args))
    assert (cfg.max_steps, cfg.lr, cfg.recal_train_in_distill) == (9, 0.1, False)
    assert cfg.batch_size == DistillConfig.batch_size and cfg.stages == DistillConfig.stages
    assert _distill(["--no-sft-in-distill"]).sft_in_distill is False  # a True default gets a --no- switch
    with pytest.raises(SystemExit):
        _distill(["--method", "magic"])  # choices come from the field


def test_help_is_the_field_docstring_with_its_default():
    parser = argparse.ArgumentParser()
    add_flags(parser, DistillConfig, defaults=False)
    text = " ".join(parser.format_help().split())
    assert "Warmup fraction of each stage's steps. (default 0.03)" in text
    assert field_docs(DistillConfig)["max_steps"] == "Optimizer steps in total, summed over stages."
    assert {a.dest for a in parser._actions} - {"help"} == {f.name for f in fields(DistillConfig)}


def test_benchmark_and_teacher_answer_flags_keep_their_defaults():
    from genrecal.benchmarks.accuracy import AccuracyConfig
    from genrecal.benchmarks.cli import build_parser
    from genrecal.benchmarks.latency import LatencyConfig

    lat = build_parser().parse_args(["latency", "--artifact", "a", "--no-bandwidth", "--runs", "2"])
    assert from_args(LatencyConfig, lat) == LatencyConfig("a", runs=2, measure_bandwidth=False)
    acc = build_parser().parse_args(["accuracy", "--artifact", "a", "--device", "cpu"])
    assert from_args(AccuracyConfig, acc) == AccuracyConfig("a", device="cpu")
    parser = argparse.ArgumentParser()
    add_flags(parser, AnswerConfig)
    answers = parser.parse_args(["--teacher", "t", "--data", "d", "--out", "o", "--dtype", "bf16"])
    assert from_args(AnswerConfig, answers) == AnswerConfig("t", "d", "o", dtype="bf16")
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "d", "--out", "o"])  # a field without a default is a required flag


def test_a_type_without_a_flag_is_named():
    @dataclass
    class Odd:
        mix: tuple[tuple[str, float], ...] = ()

    with pytest.raises(TypeError, match="'mix'"):
        add_flags(argparse.ArgumentParser(), Odd)
