"""`genrecal-export --onnx-decoder builder`: the text decoder from onnxruntime-genai's model builder, in
genrecal's folder, checked like every genrecal ONNX artifact and loaded by transformers.js.

    python -m pytest tests/export/test_onnx_builder_decoder.py -q     # ~1 min on 2 idle cores

Skips without onnxruntime-genai; the transformers.js case also without node / js/node_modules.
"""
from __future__ import annotations

import json

import onnx
import pytest

from genrecal.benchmarks import clients

pytest.importorskip("onnxruntime_genai")
QUESTION = "Does the image contain a brown shape?"


@pytest.fixture(scope="module")
def builder_export(zoo_dir, tmp_path_factory):
    """The tiny smolvlm exported at fp32 and int4 with the builder's decoder, parity checked."""
    from genrecal.export.run import ExportOptions, export

    out = tmp_path_factory.mktemp("builder") / "export"
    summary = export(ExportOptions(student=zoo_dir("smolvlm"), out=out, target="cpu", formats=("onnx",),
                                   precisions=("fp32", "int4"), check=True, threads=1, onnx_decoder="builder"),
                     log=lambda m: None)
    return out, {r["dir"]: r for r in summary["artifacts"]}


def _manifest(path):
    return json.loads((path / "genrecal_manifest.json").read_text())


def test_builder_decoder_holds_parity_and_fused_ops(builder_export):
    out, records = builder_export
    assert records["onnx-fp32"]["status"] == "ok" and records["onnx-int4"]["status"] == "ok"
    for precision, op in (("fp32", "MatMul"), ("int4", "MatMulNBits")):
        extra = _manifest(out / f"onnx-{precision}")["extra"]
        assert extra["decoder_from"].startswith("onnxruntime-genai") and "position_ids" not in extra["decoder_inputs"]
        graph = onnx.load(str(out / f"onnx-{precision}" / extra["graphs"]["decoder"]), load_external_data=False)
        ops = {n.op_type for n in graph.graph.node}
        assert {"GroupQueryAttention", "SkipSimplifiedLayerNormalization", op} <= ops
        assert all(v.type.tensor_type.shape.dim[3].dim_value == 16 for v in graph.graph.input
                   if v.name.startswith("past_key_values."))  # the tiny model's head dim, not a symbol
    # int4: the builder's fp32 graph quantised by genrecal (HQQ, zero points rewritten, 8-bit LM head)
    quant = _manifest(out / "onnx-int4")["extra"]["quantization_config"]
    decoder = quant["graphs"]["decoder_model_merged.onnx"]
    assert quant["algorithm"] == "HQQ" and decoder["head_nodes"] == 1
    assert decoder["zero_points_folded"] > 0 and decoder["float_zero_points_left"] == 0
    parity = _manifest(out / "onnx-fp32")["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-3 and parity["greedy_identical"] == 1.0
    assert parity["text_agreement"]["top1_agreement"] == 1.0


@pytest.mark.parametrize("capacity", [512, 4])  # 4: the buffer grows at the prompt and again while decoding
def test_shared_kv_buffer_gives_the_same_steps(capacity, builder_export, easy_vqa_sample, zoo_dir, monkeypatch):
    """The builder's decoder runs with one in-place KV buffer by default; stepping it with arrays passed in
    and out instead gives the same logits at every step."""
    import numpy as np

    from genrecal.runtimes.onnxruntime import OnnxRuntime
    from genrecal.runtimes.ort_kv_cache import SharedKvCache

    monkeypatch.setattr(SharedKvCache, "INITIAL_CAPACITY", capacity)

    out, _ = builder_export
    for precision in ("fp32", "int4"):
        assert _manifest(out / f"onnx-{precision}")["extra"]["past_present_share_buffer"] is True
        shared = OnnxRuntime(out / f"onnx-{precision}", threads=1)
        arrays = OnnxRuntime(out / f"onnx-{precision}", threads=1, share_kv_buffer=False)
        assert shared.share_kv_buffer and not arrays.share_kv_buffer
        enc = shared.prepare([easy_vqa_sample[2]], QUESTION)
        a, b = shared.logits_for(enc, 12), arrays.logits_for(enc, 12)
        assert a.tokens == b.tokens and len(a.tokens) >= 2
        assert np.abs(a.prefill_logits - b.prefill_logits).max() <= 1e-5
        assert max(np.abs(x - y).max() for x, y in zip(a.step_logits, b.step_logits)) <= 1e-5
        assert len({id(x) for x in a.step_logits}) == len(a.step_logits)  # each step's logits its own array
        forced = shared.logits_for(enc, 6, forced=a.tokens[:6])  # a new generation: a new buffer
        assert forced.tokens == a.tokens[:6]


def test_a_torchscript_decoder_refuses_the_shared_buffer(builder_export, zoo_dir):
    from genrecal.runtimes.base import RuntimeError_
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    torchscript = builder_export[0].parent / "torchscript"
    from genrecal.export.run import ExportOptions, export

    export(ExportOptions(student=zoo_dir("smolvlm"), out=torchscript, target="cpu", formats=("onnx",),
                         precisions=("fp32",), check=False, threads=1, onnx_decoder="torchscript"), log=lambda m: None)
    assert not OnnxRuntime(torchscript / "onnx-fp32", threads=1).share_kv_buffer
    with pytest.raises(RuntimeError_, match="cannot share one KV buffer"):
        OnnxRuntime(torchscript / "onnx-fp32", threads=1, share_kv_buffer=True)


@pytest.mark.skipif(clients.transformers_js_missing() is not None,
                    reason=f"transformers.js: {clients.transformers_js_missing()}")
def test_transformers_js_loads_the_builder_decoder(builder_export, easy_vqa_sample, zoo_dir):
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    out, _ = builder_export
    image = easy_vqa_sample[2]
    ref = clients.torch_greedy(zoo_dir("smolvlm"), image, QUESTION, 8)
    for precision in ("fp32", "int4"):
        js = clients.transformers_js(out / f"onnx-{precision}", image, QUESTION, 8)
        ours = OnnxRuntime(out / f"onnx-{precision}", threads=1).generate([image], QUESTION, 8).token_ids
        assert js.get("tokens") == ours[: len(js.get("tokens", []))] and len(ours) >= 2, js
        if precision == "fp32":
            assert js["tokens"] == ref["tokens"][: len(js["tokens"])] and js["prompt"] == ref["prompt"]


def test_builder_decoder_refuses_other_text_models(zoo_dir):
    from genrecal.export.onnx.builder_decoder import unsupported
    from genrecal.export.onnx.graphs import load_student

    model, _ = load_student(zoo_dir("internvl"))  # a Qwen2ForCausalLM text model: not one the route knows
    assert unsupported(model, "int4").startswith("its text model is 'qwen2'") and unsupported(model, "fp16")


def test_auto_default_takes_the_builder_where_the_family_says(onnx_artifact):
    """`--onnx-decoder auto` (the default): smolvlm's int4 decoder is the builder's (and the M-RoPE families':
    test_onnx_builder_mrope.py); llava's text is llama too, but auto keeps genrecal's graph there and says why;
    fp16 keeps genrecal's for every family."""
    from genrecal.export.onnx import auto_builder_families

    assert {"idefics3", "smolvlm", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"} <= set(auto_builder_families())
    assert "llava" not in auto_builder_families()
    smol = onnx_artifact("smolvlm", "int4")[1].extra
    assert smol["decoder_from"].startswith("onnxruntime-genai") and smol["exporters"]["decoder"] == "onnxruntime-genai builder"
    llava = onnx_artifact("llava", "fp32")[1].extra
    assert llava["decoder_from"].startswith("genrecal (TorchScript): --onnx-decoder auto keeps genrecal's decoder for llava")
    assert llava["exporters"]["decoder"] == "torchscript"
    assert onnx_artifact("smolvlm", "fp16")[1].extra["decoder_from"].startswith("genrecal (TorchScript): precision fp16")
