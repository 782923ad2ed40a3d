"""bf16 checkpoints through `genrecal-distill` on CPU: all three stages run, the student comes back in
its own dtype, trainable weights keep fp32 master copies, and refusals are one line."""
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForImageTextToText

from genrecal.cli import main
from genrecal.distill.config import ConfigError
from genrecal.distill.precision import cast_weights, resolve_dtype

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")


def distill(teacher, student, data, out, *extra):
    args = ["distill", "--student", student, "--data", data, "--out", str(out), "--batch-size", "4",
            "--no-progress", *extra]
    return main(args + (["--teacher", teacher] if teacher else []))


def saved_dtypes(model_dir) -> set:
    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        return {f.get_slice(k).get_dtype() for k in f.keys()}


def test_bf16_teacher_and_student_run_all_three_stages_on_cpu(bf16_zoo_dir, evqa_train, tmp_path):
    out = tmp_path / "run"
    rc = distill(bf16_zoo_dir("llava"), bf16_zoo_dir("qwen2_vl"), evqa_train, out, "--max-steps", "3",
                 "--lr", "1e-3", "--attn-mass-every", "1")
    assert rc == 0
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [ln["stage"] for ln in lines] == ["align", "distill", "sft"]
    assert all(torch.isfinite(torch.tensor(ln["loss"])) for ln in lines)
    assert "attn_q_mass" in lines[0] and "attn_q_mass" in lines[1]  # the eager diagnostic pass under autocast
    assert saved_dtypes(out / "student") == {"BF16"}
    assert json.loads((out / "student" / "config.json").read_text())["dtype"] == "bfloat16"
    model = AutoModelForImageTextToText.from_pretrained(out / "student")
    assert model.dtype == torch.bfloat16
    assert json.loads((out / "run_config.json").read_text())["dtype"] == "auto"


def test_trainable_weights_keep_fp32_master_copies(bf16_zoo_dir, evqa_train, tmp_path):
    """One AdamW step at lr 1e-5 moves (almost) every weight of a trained layer; saved in fp32 to see it."""
    student = bf16_zoo_dir("qwen2_vl")
    out = tmp_path / "sft"
    assert distill(None, student, evqa_train, out, "--method", "sft", "--max-steps", "1", "--lr", "1e-5",
                   "--min-lr", "1e-5", "--save-dtype", "fp32") == 0
    assert saved_dtypes(out / "student") == {"F32"}
    name = "model.layers.0.mlp.up_proj.weight"  # transformers 5 saves Qwen2-VL in its original key layout
    with safe_open(str(Path(student) / "model.safetensors"), "pt") as f:
        before = f.get_tensor(name).float()
    with safe_open(str(out / "student" / "model.safetensors"), "pt") as f:
        after = f.get_tensor(name)
    changed = (after != before).float().mean().item()
    assert changed > 0.9, changed


def test_a_bf16_weight_would_lose_the_same_update():
    """The control for the test above: the same AdamW step on bf16 parameters rounds away."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter((torch.randn(64, 64) * 0.05).to(torch.bfloat16))
    start = weight.detach().clone()
    weight.grad = torch.randn_like(weight)
    torch.optim.AdamW([weight], lr=1e-5, weight_decay=0.0).step()
    assert (weight.detach() != start).float().mean().item() < 0.2


def test_dtype_resolution(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_dtype("auto", torch.bfloat16, "cpu") == "bf16"
    assert resolve_dtype("auto", torch.float32, "cpu") == "fp32"
    assert resolve_dtype("auto", torch.float16, "cpu") == "fp32"  # no fp16 autocast + scaler on CPU
    assert resolve_dtype("fp32", torch.bfloat16, "cpu") == "fp32"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --config_file` sets
    assert resolve_dtype("auto", torch.float32, "cpu") == "bf16"
    with pytest.raises(ConfigError, match="fp16"):
        resolve_dtype("fp16", torch.float32, "cpu")


def test_cast_keeps_tied_tensors_shared():
    emb = torch.randn(5, 3)
    out = cast_weights({"embed": emb, "head": emb, "ids": torch.arange(3)}, torch.bfloat16)
    assert out["embed"] is out["head"] and out["embed"].dtype == torch.bfloat16
    assert out["ids"].dtype == torch.long


@needs_cpu_only
@pytest.mark.parametrize("flags,words", [
    (["--dtype", "fp16"], ["--dtype fp16", "CPU"]),
    (["--teacher-device-map", "auto"], ["--teacher-device-map", "CUDA"]),
    (["--stop-after", "polish"], ["--stop-after", "align, distill, sft"]),
])
def test_refusals_are_one_line(zoo_dir, evqa_train, tmp_path, capsys, flags, words):
    rc = distill(zoo_dir("llava"), zoo_dir("qwen2_vl"), evqa_train, tmp_path / "x", "--max-steps", "3", *flags)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err


def test_launch_settings_that_contradict_the_flags_are_one_line(zoo_dir, evqa_train, tmp_path, capsys, monkeypatch):
    from genrecal.distill.devices import check_device_map

    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")  # what a launch config may set
    rc = distill(zoo_dir("llava"), zoo_dir("qwen2_vl"), evqa_train, tmp_path / "x", "--max-steps", "3")
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--grad-accum is 1" in err, err
    with pytest.raises(ConfigError, match="one process"):
        check_device_map("auto", "cuda", 2)
