"""fp32 graphs -> int8 / int4 / fp16 graphs, with onnxruntime's own tools (no optimum).

What holds on real weights was measured layer by layer on the zoo's small-smollm2 student (real
SmolLM2-135M text weights; top-1 agreement with fp32 on 388 teacher-forced tokens of real text,
text_agreement.py), and PyTorch with the same weights fake-quantised gives the same numbers, so they
are the quantisation's, not onnxruntime's: an int8 per-tensor embedding table alone costs 4 points
(0.956; 4-bit GatherBlockQuantized 0.920; an fp16 table 0.997); int8 dynamic activation quantisation
of down_proj alone 0.448 (its input, the SwiGLU product, carries outlier channels and one scale covers
every token of a prefill); round-to-nearest symmetric int4 0.497, HQQ int4 with an 8-bit LM head 0.97;
8-bit weights at best ~0.96. In every precision below the embedding table is fp16 (Gather, then a
Cast of the rows to fp32; standard ops).

- int8: `quantize_dynamic` (activations quantised at run time) on MatMul and the vision Gathers:
  MatMul weights per output channel (one scale per column of W [K, N]); MLP down projections
  (INT8_FLOAT_NODES) stay float. Standard ONNX ops only. Every other weighted op stays float (the
  vision tower's patch Conv, LayerNorm/RMSNorm scales): the manifest's
  `quantization_config.kept_float` counts them per op type, `float_nodes` names the patterns.
- int8w: weight-only `MatMulNBitsQuantizer` at 8 bits (block INT4_BLOCK, symmetric, int8 activations
  per block: accuracy level INT8W_ACCURACY_LEVEL, the model builder's int8 on CPU) on MatMul. What the
  cpu and phone targets ship: on small-smollm2 it beats int8 on agreement (0.915 vs 0.825) and speed.
  MatMulNBits is an ORT contrib op.
- int4: weight-only HQQ (`HQQWeightOnlyQuantConfig`: scale and zero point per block fitted to the
  weights, no calibration data) at 4 bits, block INT4_BLOCK, accuracy level INT4_HQQ_ACCURACY_LEVEL ->
  MatMulNBits, its float zero points folded into the node as extra 4-bit rows (zero_points.py); the LM head at
  INT4_HEAD_BITS (round-to-nearest, symmetric, accuracy level
  INT4_ACCURACY_LEVEL). ORT contrib ops: the graph runs in onnxruntime only.
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

import numpy as np
import onnx

from genrecal.errors import GenrecalError
from genrecal.export.onnx.files import copy_graph, is_large, save_graph
from genrecal.export.onnx.nodes import attrs, set_attr
from genrecal.export.onnx.zero_points import FOLD_REPLICAS, ZERO_POINT_NODES, fold_float_zero_points

PRECISIONS = ("fp32", "int8", "int8w", "int4", "fp16")
INT4_BLOCK = 32
# MatMulNBits accuracy_level: 0 unset (fp32 compute), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations. In int4 graphs
# INT4_ACCURACY_LEVEL is the 8-bit LM head's; onnxruntime's HQQ quantizer writes no level on its 4-bit MatMuls, so
# genrecal sets INT4_HQQ_ACCURACY_LEVEL on them (_set_accuracy_level).
# HQQ's zero points are float, and onnxruntime (1.32, CPU) cannot prepack float zero points (it dequantizes B on
# every call, ~5 tok/s on small-smollm2 at 1 thread); zero_points.fold_float_zero_points folds them into the node
# (block sums appended to its input, the offsets as extra 4-bit rows) so the packed kernel runs. Rounding them to
# uint8 instead loses HQQ's
# gain (top-1 0.96 -> 0.61; PyTorch fake-quant with HQQ's scales, zero points rounded and codes refitted: 0.61-0.62).
# Level 4 on the rewritten 4-bit nodes (builder-route decoder, 2 threads): session.run 14.3-15.5 ms/token against
# 15.4-16.5 at level 0; small-smollm2 text top-1 0.959 against 0.972 (test_onnx_smollm2.py -m slow).
INT4_ACCURACY_LEVEL = 4
INT4_HQQ_ACCURACY_LEVEL = 4
# int8 activations per block. Measured on small-smollm2's text decoder, 1 thread: level 4 top-1 0.915 at 45.6 tok/s,
# level 0 (fp32 compute) 0.954 at 3.2 tok/s: onnxruntime 1.32 prepacks 8-bit MatMulNBits only at level 4
INT8W_ACCURACY_LEVEL = 4
INT4_ALGORITHM = "HQQ"  # small-smollm2 real-text top-1: HQQ 0.85, round-to-nearest symmetric 0.50
INT4_HEAD_BITS = 8  # the LM head (logits) of an int4 graph, round-to-nearest symmetric
# int8: MatMuls left float (node-name substrings); dynamic per-tensor activation quantisation of their
# input alone drops small-smollm2 real-text top-1 to 0.45
INT8_FLOAT_NODES = ("/mlp/down_proj/",)
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
    """Op types (with counts) still reading a float weight matrix/kernel (an initializer of rank >= 2);
    MatMulNBits' float inputs are its block scales, and the zero-point fold's block-sum table is 0/1."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    weights = {t.name for t in model.graph.initializer if t.data_type in floats and len(t.dims) >= 2}
    return Counter(n.op_type for n in model.graph.node
                   if n.op_type != "MatMulNBits" and not n.name.endswith(ZERO_POINT_NODES)
                   and any(i in weights for i in n.input))


def _int8(src: Path, dst: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not _has_matmul(src):
        return _embedding(src, dst)
    graph = onnx.load(str(src), load_external_data=False).graph
    keep = [n.name for n in graph.node if n.op_type == "MatMul" and any(k in n.name for k in INT8_FLOAT_NODES)]
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                     per_channel=True, use_external_data_format=is_large(src), nodes_to_exclude=keep,
                     extra_options={"MatMulConstBOnly": True})
    return {"kept_float": kept_float(onnx.load(str(dst))), "float_nodes": len(keep)}


def _has_matmul(src: Path) -> bool:
    return any(n.op_type == "MatMul" for n in onnx.load(str(src), load_external_data=False).graph.node)


def _quantizer(model, dst: Path | None = None, large: bool = False, **kwargs):
    """Run MatMulNBitsQuantizer on `model` (block INT4_BLOCK, symmetric unless an algo_config says
    otherwise); returns the quantised ModelProto, saved to `dst` (external data when `large`) if given."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(model, block_size=INT4_BLOCK, is_symmetric=True, **kwargs)
    quant.process()
    if dst is not None:
        quant.model.save_model_to_file(str(dst), use_external_data_format=large)
    return quant.model.model


def _embedding(src: Path, dst: Path) -> dict:
    """The embedding graph (a Gather on the table [V, d]): the table stored fp16, the gathered rows cast
    back to fp32 (standard ops). onnxruntime's quantizers offer an int8 table per tensor only (-4.4
    points) and GatherBlockQuantized at 4 bits (-8 points); an fp16 table -0.3."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    tables = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    for node in [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]:
        table = tables[node.input[0]]
        table.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table).astype(np.float16), table.name))
        rows = node.output[0]
        node.output[0] = f"{rows}_fp16"
        cast = helper.make_node("Cast", [node.output[0]], [rows], to=onnx.TensorProto.FLOAT, name=f"{node.name}_fp32")
        model.graph.node.insert(list(model.graph.node).index(node) + 1, cast)
    save_graph(model, dst)
    return {"kept_float": kept_float(onnx.load(str(dst)))}


def _nbits(src: Path, dst: Path, bits: int, accuracy_level: int) -> dict:
    _quantizer(onnx.load(str(src)), dst, is_large(src), bits=bits, accuracy_level=accuracy_level)
    return {"kept_float": kept_float(onnx.load(str(dst)))}


def is_lm_head(node_name: str) -> bool:
    """The LM head's MatMul by its node name: /head/... in genrecal's decoder graph, /lm_head/... in the
    onnxruntime-genai model builder's (quantised names keep the prefix)."""
    return node_name.split("/")[1:2] in (["head"], ["lm_head"])


def _int4(src: Path, dst: Path) -> dict:
    """The LM head at INT4_HEAD_BITS, then HQQ 4-bit on every other MatMul, then HQQ's float zero points
    folded into their nodes (zero_points.py) so onnxruntime prepacks the 4-bit weights; the 4-bit nodes at
    INT4_HQQ_ACCURACY_LEVEL."""
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

    if not _has_matmul(src):
        return _embedding(src, dst)
    model = onnx.load(str(src))
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    heads = [name for name in matmuls if is_lm_head(name)]
    if heads:  # nodes_to_include adds to the op types, so every other MatMul is excluded by name
        model = _quantizer(model, bits=INT4_HEAD_BITS, accuracy_level=INT4_ACCURACY_LEVEL,
                           nodes_to_exclude=[name for name in matmuls if name not in heads])
    hqq = HQQWeightOnlyQuantConfig(block_size=INT4_BLOCK, bits=4)  # its MatMulNBits: accuracy level 0
    model = _quantizer(model, nodes_to_exclude=heads, algo_config=hqq)
    zero_points = fold_float_zero_points(model)
    _set_accuracy_level(model, 4, INT4_HQQ_ACCURACY_LEVEL)
    save_graph(model, dst)
    return {"kept_float": kept_float(onnx.load(str(dst))), "head_nodes": len(heads),
            "zero_points_folded": zero_points["rewritten"], "float_zero_points_left": zero_points["skipped"]}


def _set_accuracy_level(model: onnx.ModelProto, bits: int, level: int) -> None:
    """Set accuracy_level on every `bits`-bit MatMulNBits (onnxruntime's HQQ quantizer writes none)."""
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and attrs(node).get("bits") == bits:
            set_attr(node, "accuracy_level", level)


def _int8w(src: Path, dst: Path) -> dict:
    """8-bit weight-only MatMul (MatMulNBits); the embedding graph (a Gather, no MatMul) an fp16 table."""
    if not _has_matmul(src):
        return _embedding(src, dst)
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


def convert_graph(src: Path, dst: Path, precision: str) -> dict:
    """One fp32 graph file -> `dst` at `precision` (not fp32); returns its per-graph manifest facts."""
    if precision not in _CONVERTERS:
        raise QuantizeError(f"no converter for ONNX precision {precision!r}; supported: {', '.join(_CONVERTERS)}")
    facts = _CONVERTERS[precision](src, dst)
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in facts.items()}


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
                per_graph[name] = convert_graph(src_dir / name, dst_dir / name, precision)
            domains |= op_domains(onnx.load(str(dst_dir / name), load_external_data=False))
    finally:
        quiet.setLevel(level)
    ops = "standard" if domains <= set(STANDARD_DOMAINS) else "onnxruntime-contrib"
    return {"ops": ops, "op_domains": sorted(d or "ai.onnx" for d in domains),
            "quantization": _describe(precision), "quantization_config": {**_settings(precision), "graphs": per_graph}}


def _settings(precision: str) -> dict:
    embed = {"embedding": "fp16 table, rows cast to fp32 (embed graph)"}
    return {
        "fp32": {},
        "int8": {"method": "quantize_dynamic", "weight_type": "QInt8", "ops": ["MatMul", "Gather"],
                 "per_channel": True, "granularity": {"MatMul": "per output channel", "Gather": "per tensor (vision)"},
                 "matmul_const_b_only": True, "float_nodes": list(INT8_FLOAT_NODES), **embed},
        "int8w": {"method": "MatMulNBitsQuantizer", "bits": 8, "block_size": INT4_BLOCK, "symmetric": True,
                  "accuracy_level": INT8W_ACCURACY_LEVEL, "ops": ["MatMul"], **embed},
        "int4": {"method": "MatMulNBitsQuantizer", "algorithm": INT4_ALGORITHM, "bits": 4, "block_size": INT4_BLOCK,
                 "symmetric": False, "accuracy_level": INT4_HQQ_ACCURACY_LEVEL, "ops": ["MatMul"],
                 "zero_points": (f"float per block, folded: x's block sums appended to the input, s*(8 - z) as "
                                 f"{FOLD_REPLICAS} residual 4-bit blocks of extra rows (zero_points.py)"),
                 "head": {"bits": INT4_HEAD_BITS, "method": "round-to-nearest", "symmetric": True,
                          "block_size": INT4_BLOCK, "accuracy_level": INT4_ACCURACY_LEVEL}, **embed},
        "fp16": {"method": "convert_float_to_float16", "keep_io_types": True,
                 "fp32_op_types": list(FP16_BLOCKED_OPS), "fp32_scopes": list(FP16_BLOCKED_SCOPES)},
    }[precision]


def _describe(precision: str) -> str:
    embed = "embedding table fp16"
    return {
        "fp32": "none",
        "int8": "onnxruntime.quantization.quantize_dynamic, QInt8 weights, MatMul per channel; "
                f"float: {', '.join(INT8_FLOAT_NODES)}; {embed}",
        "int8w": f"MatMulNBitsQuantizer bits=8 block_size={INT4_BLOCK} symmetric "
                 f"accuracy_level={INT8W_ACCURACY_LEVEL} (MatMul weights only); {embed}",
        "int4": f"MatMulNBitsQuantizer {INT4_ALGORITHM} bits=4 block_size={INT4_BLOCK} "
                f"accuracy_level={INT4_HQQ_ACCURACY_LEVEL} (MatMul weights only; float zero points folded into "
                f"the node as extra 4-bit rows); LM head {INT4_HEAD_BITS}-bit "
                f"accuracy_level={INT4_ACCURACY_LEVEL}; {embed}",
        "fp16": "onnxruntime.transformers.float16, keep_io_types=True (fp32 inputs/outputs), "
                "norms/softmax/rotary in fp32",
    }[precision]
