"""The model builder's decoder for the M-RoPE families (qwen2_vl via a Qwen2.5-VL shell, qwen2_5_vl, qwen3_vl with
DeepStack added back), which `--onnx-decoder auto` ships: parity with PyTorch on image prompts, and inputs that
would show the faults a builder-route decoder can have.

    python -m pytest tests/export/test_onnx_builder_mrope.py -q            # ~2 min on 2 idle cores
    python -m pytest tests/export/test_onnx_builder_mrope.py -q -m slow    # + int4 / int8w of each family

The zoo's tiny models have all-zero attention biases, and the builder leaves all-zero biases out of its graph, so a
bias the builder mishandled would not show: each student here gets seeded non-zero biases first. The parity
reference is the export's own (PyTorch with the processor's `mm_token_type_ids`, without which transformers 5.23
silently uses 1-D positions). Skips without onnxruntime-genai.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from genrecal.benchmarks import clients

pytest.importorskip("onnxruntime_genai")
# family -> zoo size: qwen3_vl's tiny-deepstack drops to other tokens without DeepStack
SIZES = {"qwen2_5_vl": "tiny", "qwen2_vl": "tiny", "qwen3_vl": "tiny-deepstack"}
SHELLS = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2_5_VLForConditionalGeneration",
          "qwen3_vl": "Qwen3VLForConditionalGeneration"}
QUESTION = "Does the image contain a brown shape?"


@pytest.fixture(scope="module")
def student(zoo_dir, tmp_path_factory):
    """student(family) -> the zoo model saved with every all-zero bias made seeded, non-zero."""
    import torch

    from genrecal.export.onnx.graphs import load_student

    made = {}

    def get(family: str):
        if family not in made:
            model, processor = load_student(zoo_dir(family, SIZES[family]))
            gen = torch.Generator().manual_seed(7)
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name.endswith("bias") and not param.any():
                        param.copy_(0.05 * torch.randn(param.shape, generator=gen))
            out = tmp_path_factory.mktemp(f"{family}-biased")
            model.save_pretrained(out, safe_serialization=True)
            processor.save_pretrained(out)
            made[family] = out
        return made[family]

    return get


@pytest.fixture(scope="module")
def build(student, tmp_path_factory):
    """build(family) -> (OnnxBuild, fp32 artifact dir), `--onnx-decoder auto`, parity checked."""
    from genrecal.export.onnx import OnnxBuild

    made = {}

    def get(family: str):
        if family not in made:
            root = tmp_path_factory.mktemp(f"{family}-export")
            b = OnnxBuild(student(family), root / "work", check=True, threads=1)
            b.build(root / "onnx-fp32", "fp32", "cpu")
            made[family] = b, root / "onnx-fp32"
        return made[family]

    return get


def _manifest(path):
    return json.loads((path / "genrecal_manifest.json").read_text())


def _decoder(path):
    return onnx.load(str(path / _manifest(path)["extra"]["graphs"]["decoder"]), load_external_data=False)


@pytest.mark.parametrize("family", list(SIZES))
def test_auto_ships_the_builders_mrope_decoder_at_parity(family, build):
    _, out = build(family)
    extra, parity = _manifest(out)["extra"], _manifest(out)["parity"]
    assert extra["decoder_from"].startswith("onnxruntime-genai") and SHELLS[family] in extra["decoder_from"]
    assert "position_ids" in extra["decoder_inputs"] and extra["past_present_share_buffer"] is True
    graph = _decoder(out)
    assert {"MRotaryEmbedding", "GroupQueryAttention", "SkipSimplifiedLayerNormalization"} <= {n.op_type for n in graph.graph.node}
    position_ids = next(i for i in graph.graph.input if i.name == "position_ids")
    assert position_ids.type.tensor_type.shape.dim[0].dim_value == 3  # [3, B, L]
    # measured: 3.7e-7 (qwen2_5_vl), 3.6e-7 (qwen2_vl), 3.9e-7 (qwen3_vl), greedy 3/3 each
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-3 and parity["greedy_identical"] == 1.0
    biases = [i.name for i in graph.graph.initializer if i.name.endswith("_proj.Add.bias")]
    if family != "qwen3_vl":  # Qwen2 bodies: q/k/v biases, non-zero here, so the builder kept them
        assert len(biases) == 3 * extra["num_layers"]


@pytest.mark.parametrize("family", list(SIZES))
def test_the_image_prompts_expose_1d_positions(family, build):
    """Fed 1-D positions (every axis = the token index, what transformers uses without mm_token_type_ids), the
    same decoder fails the check: the parity samples exercise the M-RoPE ids, and the reference is M-RoPE."""
    from genrecal.export.onnx.parity import check_artifact
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    b, out = build(family)
    rt = OnnxRuntime(out, threads=1)

    def one_d(enc):
        length = enc["input_ids"].shape[1]
        return np.broadcast_to(np.arange(length, dtype=np.int64), (3, 1, length)).copy(), np.zeros((1, 1), np.int64)

    rt.position_ids = one_d
    wrong = check_artifact(rt, b.reference(), "fp32")
    # measured: 4.5e-3 (qwen2_5_vl), 3.6e-3 (qwen2_vl), 0.19 and greedy 0/3 (qwen3_vl) against <= 3.9e-7 right
    assert wrong["max_abs_diff"] > 3e-3 and not wrong["passed"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_the_non_zero_biases_matter(family, build, tmp_path):
    """The same decoder with its q/k/v biases zeroed (what a zoo model's all-zero biases would hide) fails."""
    import onnxruntime as ort

    from genrecal.export.onnx.parity import check_artifact
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    b, out = build(family)
    graph = onnx.load(str(out / _manifest(out)["extra"]["graphs"]["decoder"]))
    for init in graph.graph.initializer:
        if init.name.endswith("_proj.Add.bias"):
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(init)), init.name))
    onnx.save(graph, str(tmp_path / "no_bias.onnx"))
    rt = OnnxRuntime(out, threads=1)
    rt.sessions["decoder"] = ort.InferenceSession(str(tmp_path / "no_bias.onnx"), providers=["CPUExecutionProvider"])
    wrong = check_artifact(rt, b.reference(), "fp32")  # measured: 0.20 / 0.26, greedy 0/3
    assert wrong["max_abs_diff"] > 0.1 and wrong["greedy_identical"] < 1.0 and not wrong["passed"]


def test_deepstack_is_added_back_and_matters(build):
    """qwen3_vl: the builder's decoder takes genrecal's DeepStack layout (one Add per level, in the residual stream
    after text layers 0 and 1); zeroing the DeepStack columns (what the builder's own graph computes) fails."""
    from genrecal.export.onnx.parity import check_artifact
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    b, out = build("qwen3_vl")
    extra = _manifest(out)["extra"]
    assert extra["deepstack_layers"] == 2 and "DeepStack (2 levels) added by genrecal" in extra["decoder_from"]
    graph = _decoder(out)
    embeds = next(i for i in graph.graph.input if i.name == "inputs_embeds")
    assert embeds.type.tensor_type.shape.dim[2].dim_value == 64 * 3
    adds = [n for n in graph.graph.node if n.name.startswith("/model/deepstack/") and n.op_type == "Add"]
    consumers = {n.name for n in graph.graph.node if any(a.output[0] in n.input for a in adds)}
    assert consumers == {"/model/layers.1/input_layernorm/SkipLayerNorm", "/model/layers.2/input_layernorm/SkipLayerNorm"}

    rt = OnnxRuntime(out, threads=1)
    encode = rt.encode_images

    def without_deepstack(enc):
        feats = encode(enc)
        if feats is not None:  # None: the text-only prompt of the real-text record
            feats = feats.copy()
            feats[:, 64:] = 0.0
        return feats

    rt.encode_images = without_deepstack
    dropped = check_artifact(rt, b.reference(), "fp32")  # measured: 0.88, greedy 0/3
    assert dropped["max_abs_diff"] > 0.1 and dropped["greedy_identical"] < 1.0 and not dropped["passed"]


@pytest.mark.skipif(clients.transformers_js_missing() is not None,
                    reason=f"transformers.js: {clients.transformers_js_missing()}")
def test_transformers_js_runs_the_deepstack_builder_decoder(build, student, easy_vqa_sample):
    """transformers.js feeds genrecal's graphs as they are, so DeepStack added to the builder's graph runs there too."""
    _, out = build("qwen3_vl")
    image = easy_vqa_sample[2]
    ref = clients.torch_greedy(student("qwen3_vl"), image, QUESTION, 8)
    got = clients.transformers_js(out, image, QUESTION, 8)
    assert got.get("tokens") == ref["tokens"] and got["prompt"] == ref["prompt"], got


@pytest.mark.slow
@pytest.mark.parametrize("family", list(SIZES))
def test_quantised_builder_decoders_pass(family, build, tmp_path):
    """int4 / int8w: the builder's fp32 graph (DeepStack included) quantised by genrecal, checked like every artifact."""
    b, _ = build(family)
    for precision in ("int4", "int8w"):
        manifest = b.build(tmp_path / f"onnx-{precision}", precision, "cpu")
        assert manifest.extra["decoder_from"].startswith("onnxruntime-genai") and manifest.parity["passed"], manifest.parity
