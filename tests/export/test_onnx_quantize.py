"""What each ONNX precision keeps in float, and that the manifest says so.

    python -m pytest tests/export/test_onnx_quantize.py -q

int8: MatMul weights per output channel, the vision patch Conv and the MLP down projections left float;
int4: HQQ MatMulNBits with the recorded block size and accuracy level, an 8-bit LM head; int8w and
int4: an 8-bit blockwise embedding table; fp16: norm statistics, softmax and rotary angles in fp32.
"""
from __future__ import annotations

import onnx
import pytest

from genrecal.artifacts import layout
from genrecal.export.onnx.nodes import attrs
from genrecal.export.onnx.quantize import (
    FP16_BLOCKED_OPS,
    INT4_ACCURACY_LEVEL,
    INT4_BLOCK,
    INT4_HEAD_BITS,
    INT4_HQQ_ACCURACY_LEVEL,
    INT8_FLOAT_NODES,
    INT8W_ACCURACY_LEVEL,
    fp16_blocked_nodes,
    is_lm_head,
)
from genrecal.artifacts.manifest import load_manifest


def _graph(out, name):
    """A graph of an artifact dir by its flat name (decoder_model_merged.onnx), wherever the layout keeps it."""
    precision = load_manifest(out, verify=False).precision
    return onnx.load(str(out / layout.client_graph(name, precision)))


def test_int8_is_per_channel_and_records_the_float_ops(onnx_artifact):
    out, manifest = onnx_artifact("idefics3", "int8")
    cfg = manifest.extra["quantization_config"]
    assert cfg["per_channel"] and cfg["granularity"]["MatMul"] == "per output channel"
    assert cfg["graphs"][layout.VISION_GRAPH]["kept_float"].get("Conv") == 1  # SigLIP's patch embedding
    decoder_cfg = cfg["graphs"][layout.DECODER_GRAPH]
    n_layers = manifest.extra["num_layers"]
    # every weight MatMul is int8 but the MLP down projections (activation outliers), which the manifest names
    assert decoder_cfg["kept_float"]["MatMul"] == decoder_cfg["float_nodes"] == n_layers
    assert cfg["float_nodes"] == list(INT8_FLOAT_NODES)
    _assert_fp16_table(_graph(out, layout.EMBED_GRAPH))
    model = _graph(out, layout.DECODER_GRAPH)
    inits = {t.name: t for t in model.graph.initializer}
    per_channel = 0
    for node in (n for n in model.graph.node if n.op_type == "MatMulInteger"):
        weight, zero = inits.get(node.input[1]), inits.get(node.input[3]) if len(node.input) > 3 else None
        if weight is not None and zero is not None:
            assert list(zero.dims) == [weight.dims[1]], node.name  # one zero point per output column
            per_channel += 1
    assert per_channel >= 2 * 4  # q/k/v/o + MLP of two layers at least


def test_int4_records_block_size_and_accuracy_level(onnx_artifact):
    out, manifest = onnx_artifact("smolvlm", "int4")
    cfg = manifest.extra["quantization_config"]
    assert (cfg["block_size"], cfg["accuracy_level"]) == (INT4_BLOCK, INT4_HQQ_ACCURACY_LEVEL)
    assert (cfg["head"]["bits"], cfg["head"]["accuracy_level"]) == (INT4_HEAD_BITS, INT4_ACCURACY_LEVEL)
    nodes = [n for n in _graph(out, layout.DECODER_GRAPH).graph.node if n.op_type == "MatMulNBits"]
    assert nodes
    for node in nodes:
        got = attrs(node)
        level = INT4_ACCURACY_LEVEL if is_lm_head(node.name) else INT4_HQQ_ACCURACY_LEVEL
        assert got["block_size"] == INT4_BLOCK and got.get("accuracy_level", 0) == level
    bits = {n.name: attrs(n)["bits"] for n in nodes}
    assert [bits[n.name] for n in nodes if is_lm_head(n.name)] == [INT4_HEAD_BITS]  # the LM head
    assert sum(b == 4 for b in bits.values()) == len(bits) - 1
    # HQQ's float zero points are folded into the nodes (zero_points.py), so onnxruntime prepacks the weights
    assert all(len(n.input) == 3 for n in nodes)
    decoder_cfg = cfg["graphs"][layout.DECODER_GRAPH]
    assert decoder_cfg["zero_points_folded"] == len(nodes) - 1 and decoder_cfg["float_zero_points_left"] == 0
    assert cfg["algorithm"] == "HQQ" and decoder_cfg["head_nodes"] == 1
    _assert_fp16_table(_graph(out, layout.EMBED_GRAPH))


def _assert_fp16_table(embed):
    """The embedding graph: Gather on an fp16 table [V, d], rows cast to fp32."""
    assert [n.op_type for n in embed.graph.node] == ["Gather", "Cast"]
    assert [t.data_type for t in embed.graph.initializer if len(t.dims) == 2] == [onnx.TensorProto.FLOAT16]
    assert embed.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("family", ["smolvlm", "qwen2_vl"])
def test_fp16_keeps_norms_softmax_and_rotary_in_fp32(family, onnx_artifact, zoo_dir):
    out, manifest = onnx_artifact(family, "fp16")
    model = onnx.shape_inference.infer_shapes(_graph(out, layout.DECODER_GRAPH))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    blocked = set(fp16_blocked_nodes(model))
    assert any("norm" in n for n in blocked) and any("rotary_emb" in n for n in blocked)
    checked = 0
    for node in g.node:
        if node.op_type in FP16_BLOCKED_OPS or node.name in blocked:
            for name in node.input:
                if types.get(name) in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT):
                    assert types[name] == onnx.TensorProto.FLOAT, f"{node.name} reads fp16 {name}"
                    checked += 1
    assert checked > 10
    fp16_weights = [t for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT16 and len(t.dims) == 2]
    assert len(fp16_weights) >= 8  # the matmuls themselves are fp16
    assert manifest.extra["quantization_config"]["graphs"][layout.DECODER_GRAPH]["kept_fp32"]["Softmax"] >= 2


def test_int8w_is_weight_only_8_bit_and_meets_parity(onnx_artifact):
    out, manifest = onnx_artifact("smolvlm", "int8w")
    cfg = manifest.extra["quantization_config"]
    assert (cfg["bits"], cfg["block_size"], cfg["accuracy_level"]) == (8, INT4_BLOCK, INT8W_ACCURACY_LEVEL)
    assert manifest.parity["passed"] and manifest.extra["ops"] == "onnxruntime-contrib"
    decoder = _graph(out, layout.DECODER_GRAPH)
    nodes = [n for n in decoder.graph.node if n.op_type == "MatMulNBits"]
    assert nodes and all(attrs(n)["bits"] == 8 for n in nodes)
    _assert_fp16_table(_graph(out, layout.EMBED_GRAPH))
