"""fp32 graphs -> int8 / int4 / fp16 graphs, with onnxruntime's own tools (no optimum).

- int8: `quantize_dynamic` (activations quantised at run time) on MatMul and Gather: MatMul weights
  per output channel (one scale per column of W [K, N]), the embedding table (Gather) per tensor.
  Every other weighted op stays float (the vision tower's patch Conv, LayerNorm/RMSNorm scales):
  the manifest's `quantization_config.kept_float` counts them per op type.
- int8w: weight-only `MatMulNBitsQuantizer` at 8 bits (block INT4_BLOCK, symmetric, fp32 compute:
  accuracy level 0) on MatMul, embedding table as for int8. On real weights (the zoo's small-smollm2)
  it keeps 95 % top-1 agreement on real text where int8's per-tensor dynamic activation
  quantisation keeps 45 % (outlier activations): int8 is the fast standard-op graph, int8w the one
  that holds. MatMulNBits is an ORT contrib op.
- int4: weight-only `MatMulNBitsQuantizer` (block INT4_BLOCK, symmetric, accuracy level
  INT4_ACCURACY_LEVEL) -> MatMulNBits, an ORT contrib op: the graph runs in onnxruntime only.
- fp16: `onnxruntime.transformers.float16.convert_float_to_float16` with fp32 inputs/outputs kept
  and a block list (FP16_BLOCKED_OPS + every node of a norm or rotary-embedding module) left in
  fp32: RMSNorm's x^2 mean and softmax overflow fp16 once activations are large, and rotary angles
  (position x frequency) lose their fractional part in fp16 past position ~1000. Standard ONNX ops
  only, so TensorRT can parse it (checked after conversion).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import onnx

from genrecal.errors import GenrecalError
from genrecal.export.onnx.files import copy_graph, is_large, save_graph

PRECISIONS = ("fp32", "int8", "int8w", "int4", "fp16")
INT4_BLOCK = 32
# MatMulNBits accuracy_level: 0 unset (fp32 compute), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations
INT4_ACCURACY_LEVEL = 4
INT8W_ACCURACY_LEVEL = 0  # fp32 compute: level 4 (int8 activations per block) measured 0.91 vs 0.95 top-1
STANDARD_DOMAINS = ("", "ai.onnx")
# ops computed in fp32 inside fp16 graphs: norm statistics, softmax, rotary angles
FP16_BLOCKED_OPS = ("Softmax", "LayerNormalization", "Pow", "ReduceMean", "Sqrt", "Reciprocal", "Cos", "Sin")
# a node whose scoped name has one of these path parts is kept in fp32 whatever its op
FP16_BLOCKED_SCOPES = ("norm", "rotary_emb")


class QuantizeError(GenrecalError):
    """A precision genrecal does not produce, or a converted graph that breaks a promise."""


def op_domains(model: onnx.ModelProto) -> set[str]:
    return {node.domain for node in model.graph.node}


def kept_float(model: onnx.ModelProto) -> Counter:
    """Op types (with counts) still reading a float weight matrix/kernel (an initializer of rank >= 2)."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    weights = {t.name for t in model.graph.initializer if t.data_type in floats and len(t.dims) >= 2}
    return Counter(n.op_type for n in model.graph.node if any(i in weights for i in n.input))


def _int8(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                     per_channel=True, use_external_data_format=is_large(src),
                     extra_options={"MatMulConstBOnly": True})
    return {"kept_float": kept_float(onnx.load(str(dst)))}


def _nbits(src: Path, dst: Path, bits: int, accuracy_level: int) -> dict:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=INT4_BLOCK, is_symmetric=True,
                                 accuracy_level=accuracy_level)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=is_large(src))
    return {"kept_float": kept_float(onnx.load(str(dst)))}


def _int4(src: Path, dst: Path) -> dict:
    return _nbits(src, dst, 4, INT4_ACCURACY_LEVEL)


def _int8w(src: Path, dst: Path) -> dict:
    """8-bit weight-only MatMul (MatMulNBits); the embedding graph (a Gather, no MatMul) gets int8's."""
    if not any(n.op_type == "MatMul" for n in onnx.load(str(src), load_external_data=False).graph.node):
        return _int8(src, dst)
    return _nbits(src, dst, 8, INT8W_ACCURACY_LEVEL)


def fp16_blocked_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes inside a norm or rotary module (TorchScript scopes: /model/.../input_layernorm/Pow)."""
    def blocked(name: str) -> bool:
        return any(key in part.lower() for part in name.split("/")[:-1] for key in FP16_BLOCKED_SCOPES)

    return [n.name for n in model.graph.node if n.name and blocked(n.name)]


def drop_fp16_round_trips(model: onnx.ModelProto, blocked: set[str]) -> int:
    """Rewire fp32 -> Cast(fp16) -> Cast(fp32) chains to the fp32 value; returns how many.

    The converter casts every blocked node's float output to fp16 and back before the next blocked
    node, so a chain of fp32 nodes (rotary: positions -> angles -> cos) would still round through
    fp16 between them. A value is known fp32 when a node in `blocked` (names), a blocked op type or
    a Cast to float made it, or it is a float graph input. Exact: consumers get the fp32 value.
    """
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {out: n for n in model.graph.node for out in n.output}
    fp32_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == f32}

    def is_fp32(name: str) -> bool:
        node = producer.get(name)
        if node is None:
            return name in fp32_inputs
        return node.name in blocked or node.op_type in FP16_BLOCKED_OPS or cast_to(node) == f32

    outputs = {o.name for o in model.graph.output}
    rewire = {}
    for node in model.graph.node:
        parent = producer.get(node.input[0]) if node.input else None
        if (cast_to(node) == f32 and parent is not None and cast_to(parent) == f16 and is_fp32(parent.input[0])
                and node.output[0] not in outputs):
            rewire[node.output[0]] = parent.input[0]
    for node in model.graph.node:
        node.input[:] = [rewire.get(i, i) for i in node.input]
    while True:  # drop the bypassed casts, then the fp16 casts only they read
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            return len(rewire)
        for node in dead:
            model.graph.node.remove(node)


def _fp16(src: Path, dst: Path) -> dict:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    nodes = fp16_blocked_nodes(model)
    ops = Counter(n.op_type for n in model.graph.node if n.op_type in FP16_BLOCKED_OPS or n.name in set(nodes))
    model = convert_float_to_float16(model, keep_io_types=True, node_block_list=nodes,
                                     op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_BLOCKED_OPS])
    trips = drop_fp16_round_trips(model, set(nodes))
    foreign = op_domains(model) - set(STANDARD_DOMAINS)
    if foreign:  # a graph meant for TensorRT must parse with its ONNX parser
        raise QuantizeError(f"fp16 {src.name} uses non-standard op domains {sorted(foreign)}")
    save_graph(model, dst)
    return {"kept_fp32": ops, "fp16_round_trips_removed": trips}


_CONVERTERS = {"int8": _int8, "int8w": _int8w, "int4": _int4, "fp16": _fp16}


def convert_graphs(src_dir: Path, dst_dir: Path, precision: str) -> dict:
    """Write every graph of `src_dir` (fp32) into `dst_dir` at `precision`; returns facts for the
    manifest: `ops` ("standard" or "onnxruntime-contrib"), `op_domains`, `quantization` (one line)
    and `quantization_config` (settings + per-graph op counts kept in float)."""
    if precision not in PRECISIONS:
        raise QuantizeError(f"unknown ONNX precision {precision!r}; supported: {', '.join(PRECISIONS)}")
    dst_dir.mkdir(parents=True, exist_ok=True)
    domains: set[str] = set()
    per_graph: dict[str, dict] = {}
    # the quantizers log advice for every graph on the root logger; keep the CLI output readable
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for name in sorted(p.name for p in src_dir.glob("*.onnx")):  # the three graphs (+ genai's embedding)
            if precision == "fp32":
                copy_graph(src_dir / name, dst_dir / name)
            else:
                facts = _CONVERTERS[precision](src_dir / name, dst_dir / name)
                per_graph[name] = {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in facts.items()}
            domains |= op_domains(onnx.load(str(dst_dir / name), load_external_data=False))
    finally:
        quiet.setLevel(level)
    ops = "standard" if domains <= set(STANDARD_DOMAINS) else "onnxruntime-contrib"
    return {"ops": ops, "op_domains": sorted(d or "ai.onnx" for d in domains),
            "quantization": _describe(precision), "quantization_config": {**_settings(precision), "graphs": per_graph}}


def _settings(precision: str) -> dict:
    return {
        "fp32": {},
        "int8": {"method": "quantize_dynamic", "weight_type": "QInt8", "ops": ["MatMul", "Gather"],
                 "per_channel": True, "granularity": {"MatMul": "per output channel", "Gather": "per tensor"},
                 "matmul_const_b_only": True},
        "int8w": {"method": "MatMulNBitsQuantizer", "bits": 8, "block_size": INT4_BLOCK, "symmetric": True,
                  "accuracy_level": INT8W_ACCURACY_LEVEL, "ops": ["MatMul"],
                  "embedding": "quantize_dynamic Gather per tensor (embed graph)"},
        "int4": {"method": "MatMulNBitsQuantizer", "bits": 4, "block_size": INT4_BLOCK, "symmetric": True,
                 "accuracy_level": INT4_ACCURACY_LEVEL, "ops": ["MatMul"]},
        "fp16": {"method": "convert_float_to_float16", "keep_io_types": True,
                 "fp32_op_types": list(FP16_BLOCKED_OPS), "fp32_scopes": list(FP16_BLOCKED_SCOPES)},
    }[precision]


def _describe(precision: str) -> str:
    return {
        "fp32": "none",
        "int8": "onnxruntime.quantization.quantize_dynamic, QInt8 weights, MatMul per channel + Gather per tensor",
        "int8w": f"MatMulNBitsQuantizer bits=8 block_size={INT4_BLOCK} symmetric "
                 f"accuracy_level={INT8W_ACCURACY_LEVEL} (MatMul weights only; embedding Gather int8 per tensor)",
        "int4": f"MatMulNBitsQuantizer bits=4 block_size={INT4_BLOCK} symmetric "
                f"accuracy_level={INT4_ACCURACY_LEVEL} (MatMul weights only)",
        "fp16": "onnxruntime.transformers.float16, keep_io_types=True (fp32 inputs/outputs), "
                "norms/softmax/rotary in fp32",
    }[precision]
