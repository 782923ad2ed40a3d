"""fp32 graphs -> int8 / int4 / fp16 graphs, with onnxruntime's own tools (no optimum).

- int8: `quantize_dynamic` (weights int8 per tensor, activations quantised at run time) on MatMul
  and Gather (the embedding table is a large share of a small model).
- int4: weight-only `MatMulNBitsQuantizer` (block 32, symmetric) -> MatMulNBits, an ORT contrib
  op: the graph runs in onnxruntime only.
- fp16: `onnxruntime.transformers.float16.convert_float_to_float16` with fp32 inputs/outputs kept,
  standard ONNX ops only, so TensorRT can parse it (checked after conversion).
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnx

from genrecal.errors import GenrecalError
from genrecal.export.onnx.files import copy_graph, is_large, save_graph

PRECISIONS = ("fp32", "int8", "int4", "fp16")
INT4_BLOCK = 32
STANDARD_DOMAINS = ("", "ai.onnx")


class QuantizeError(GenrecalError):
    """A precision genrecal does not produce, or a converted graph that breaks a promise."""


def op_domains(model: onnx.ModelProto) -> set[str]:
    return {node.domain for node in model.graph.node}


def _int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"],
                     use_external_data_format=is_large(src))


def _int4(src: Path, dst: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=INT4_BLOCK, is_symmetric=True)
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=is_large(src))


def _fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    foreign = op_domains(model) - set(STANDARD_DOMAINS)
    if foreign:  # a graph meant for TensorRT must parse with its ONNX parser
        raise QuantizeError(f"fp16 {src.name} uses non-standard op domains {sorted(foreign)}")
    save_graph(model, dst)


_CONVERTERS = {"int8": _int8, "int4": _int4, "fp16": _fp16}


def convert_graphs(src_dir: Path, dst_dir: Path, precision: str) -> dict:
    """Write every graph of `src_dir` (fp32) into `dst_dir` at `precision`; returns facts for the
    manifest (`ops`: "standard" or "onnxruntime-contrib")."""
    if precision not in PRECISIONS:
        raise QuantizeError(f"unknown ONNX precision {precision!r}; supported: {', '.join(PRECISIONS)}")
    dst_dir.mkdir(parents=True, exist_ok=True)
    domains: set[str] = set()
    # the quantizers log advice for every graph on the root logger; keep the CLI output readable
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for name in sorted(p.name for p in src_dir.glob("*.onnx")):  # the three graphs (+ genai's embedding)
            if precision == "fp32":
                copy_graph(src_dir / name, dst_dir / name)
            else:
                _CONVERTERS[precision](src_dir / name, dst_dir / name)
            domains |= op_domains(onnx.load(str(dst_dir / name), load_external_data=False))
    finally:
        quiet.setLevel(level)
    ops = "standard" if domains <= set(STANDARD_DOMAINS) else "onnxruntime-contrib"
    return {"ops": ops, "op_domains": sorted(d or "ai.onnx" for d in domains),
            "quantization": _describe(precision)}


def _describe(precision: str) -> str:
    return {
        "fp32": "none",
        "int8": "onnxruntime.quantization.quantize_dynamic, QInt8 weights, MatMul + Gather",
        "int4": f"MatMulNBitsQuantizer bits=4 block_size={INT4_BLOCK} symmetric (MatMul weights only)",
        "fp16": "onnxruntime.transformers.float16, keep_io_types=True (fp32 inputs/outputs)",
    }[precision]
