"""Every family x ONNX precision exports, runs in real onnxruntime and meets its parity bar.

    python -m pytest tests/export/test_onnx_parity.py -q -s   # -s prints the measured numbers

Bars (genrecal.export.onnx.parity.TOLERANCES): fp32 logits within 1e-3 of PyTorch eager at prefill
and every decode step with identical 16-token greedy continuations; fp16 within 5e-3 x max(1,
max |logit|) and identical greedy; int8 / int4 top-1 agreement (teacher-forced on PyTorch's
tokens) >= 70% / 40%.
"""
from __future__ import annotations

import numpy as np
import pytest

from genrecal.export.onnx.parity import NEW_TOKENS, PARITY_SAMPLES, TOLERANCES
from genrecal.families import with_format
from genrecal.runtimes.onnxruntime import OnnxRuntime

ONNX_FAMILIES = with_format("onnx")  # every family with an ONNX wrapper
ONNX_PRECISIONS = ("fp32", "fp16", "int8", "int4")
CASES = [(f, p) for f in ONNX_FAMILIES for p in ONNX_PRECISIONS]


@pytest.mark.parametrize("family, precision", CASES, ids=[f"{f}-{p}" for f, p in CASES])
def test_artifact_meets_parity(family, precision, onnx_artifact):
    out, manifest = onnx_artifact(family, precision)
    p = manifest.parity
    print(f"\n{family:10s} {precision:5s} max|diff| {p['max_abs_diff']:.2e} (prefill {p['prefill_max_abs_diff']:.2e}) "
          f"greedy {p['greedy_identical']:.0%} top-1 {p['top1_agreement']:.0%} over {p['top1_steps']} steps, "
          f"accuracy torch {p['accuracy']['torch']:.0%} onnx {p['accuracy']['artifact']:.0%}")
    assert manifest.format == "onnx" and manifest.family == family and manifest.precision == precision
    assert p["samples"] == PARITY_SAMPLES and p["new_tokens"] == NEW_TOKENS
    assert p["accuracy"]["questions"] == 20
    tol = TOLERANCES[precision]
    assert p["tolerance"] == tol
    if precision == "fp32":
        assert p["max_abs_diff"] <= tol["max_abs_diff"]
        assert p["greedy_identical"] == 1.0
    elif precision == "fp16":
        assert p["max_abs_diff"] <= tol["max_rel_diff"] * max(1.0, p["logit_scale"])
        assert p["greedy_identical"] == 1.0
    else:
        assert p["top1_agreement"] >= tol["top1_agreement"]
    assert p["passed"] is True
    # the ops promise: fp16 is for TensorRT (standard ops only), int4 needs ORT's MatMulNBits
    assert manifest.extra["ops"] == ("onnxruntime-contrib" if precision == "int4" else "standard")


@pytest.mark.parametrize("family", ONNX_FAMILIES)
def test_runtime_generates_like_parity_says(family, onnx_artifact, easy_vqa_sample):
    """The public Runtime API returns the same greedy tokens the parity check compared."""
    out, manifest = onnx_artifact(family, "fp32")
    question, _, image = easy_vqa_sample
    rt = OnnxRuntime(out, threads=1)
    gen = rt.generate([image], question, max_new_tokens=NEW_TOKENS)
    trace = rt.logits_for(rt.prepare([image], question), NEW_TOKENS)
    assert gen.token_ids == trace.tokens and gen.timing.tokens_out == len(trace.tokens)
    assert trace.prefill_logits.shape == (gen.timing.tokens_in, manifest.extra["vocab_size"])
    assert all(np.isfinite(s).all() for s in trace.step_logits)
