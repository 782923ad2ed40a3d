"""GPU paths of `genrecal-distill`: teacher, student, Recalibrator and batches on the CUDA device, a
device-mapped teacher, gradient checkpointing on by default. Skipped cleanly without CUDA."""
import json

import pytest
import torch

from genrecal.cli import main

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def run(teacher, student, data, out, *extra):
    return main(["distill", "--teacher", teacher, "--student", student, "--data", data, "--out", str(out),
                 "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--attn-mass-every", "1", "--no-progress",
                 *extra])


def stages(out):
    return [json.loads(x)["stage"] for x in (out / "train_log.jsonl").read_text().splitlines()]


def test_bf16_genrecal_on_the_gpu(bf16_zoo_dir, evqa_train, tmp_path):
    out = tmp_path / "gpu"
    assert run(bf16_zoo_dir("llava"), bf16_zoo_dir("qwen2_vl"), evqa_train, out) == 0
    assert stages(out) == ["align", "distill", "sft"]
    config = json.loads((out / "student" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"


def test_everything_lands_on_the_accelerate_device(bf16_zoo_dir, evqa_train, tmp_path):
    from genrecal.distill.config import DistillConfig
    from genrecal.distill.launch import make_accelerator, prepare, run_dtype

    cfg = DistillConfig(teacher=bf16_zoo_dir("llava"), student=bf16_zoo_dir("qwen2_vl"), data=evqa_train,
                        out=str(tmp_path / "o"), limit=8)
    dtype = run_dtype(cfg)
    acc = make_accelerator(cfg, dtype)
    data = prepare(cfg, dtype, acc.device, progress=False)
    assert dtype == "bf16" and acc.device.type == "cuda"
    assert {p.device.type for p in data.teacher.model.parameters()} == {"cuda"}
    assert {p.dtype for p in data.teacher.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in data.student.model.parameters()} == {torch.float32}  # master copies


def test_device_mapped_teacher_and_fp16(zoo_dir, evqa_train, tmp_path):
    out = tmp_path / "mapped"
    assert run(zoo_dir("llava"), zoo_dir("qwen2_vl"), evqa_train, out, "--teacher-device-map", "auto",
               "--dtype", "fp16", "--save-dtype", "fp32") == 0
    assert stages(out) == ["align", "distill", "sft"]
    assert json.loads((out / "student" / "config.json").read_text())["dtype"] == "float32"
