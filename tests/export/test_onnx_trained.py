"""A trained student keeps its easy-vqa accuracy in every ONNX precision (random zoo weights score
0% everywhere, so only a trained model makes the accuracy column mean something).

    python -m pytest tests/export/test_onnx_trained.py -q -m slow     # ~3 min on 2 cores
"""
from __future__ import annotations

import json

import pytest

from genrecal.cli import export_main, main
from genrecal.artifacts import layout


@pytest.mark.slow
def test_trained_llava_keeps_accuracy_in_every_precision(zoo_dir, tmp_path):
    from genrecal.data import write_easy_vqa

    data = write_easy_vqa(tmp_path / "evqa", split="train", limit=8000, seed=0)
    run = tmp_path / "run"
    assert main(["distill", "--student", zoo_dir("llava"), "--data", str(data), "--out", str(run), "--method", "sft",
                 "--max-steps", "600", "--batch-size", "32", "--lr", "1e-3", "--no-progress"]) == 0
    out = tmp_path / "out"
    assert export_main(["--student", str(run / "student"), "--target", "cpu", "--out", str(out),
                        "--precision", "fp32,int8,int4,fp16", "--threads", "1"]) == 0
    records = {r["dir"]: r["parity"] for r in json.loads((out / layout.SUMMARY_NAME).read_text())["artifacts"]}
    torch_acc = records["onnx-fp32"]["accuracy"]["torch"]
    assert torch_acc >= 0.3, "the student did not learn; the accuracy comparison would be vacuous"
    for name, parity in records.items():
        assert parity["passed"], name
        drop = torch_acc - parity["accuracy"]["artifact"]
        assert drop <= (0.0 if name in ("onnx-fp32", "onnx-fp16") else 0.15), (name, parity["accuracy"])
