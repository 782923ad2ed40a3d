"""Exporting and writing ONNX graphs of any size: one .onnx file below protobuf's 2 GB limit, else
the graph plus a single `<graph>.onnx.data` sidecar (onnxruntime and TensorRT find it next to the
graph). Only graphs of the tiny test models are exercised here; the > 2 GB path is untested."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import onnx
import torch

from genrecal.errors import GenrecalError
from genrecal.artifacts import layout

PROTO_LIMIT = 1_800_000_000  # bytes of weights; protobuf refuses > 2 GiB, the graph itself needs room


class OnnxExportError(GenrecalError):
    """A graph that failed to export or failed onnx.checker."""


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def is_large(path: Path) -> bool:
    """True when a graph (with its sidecar) is too big to be one protobuf."""
    return path.stat().st_size + (sidecar(path).stat().st_size if sidecar(path).is_file() else 0) > PROTO_LIMIT


def save_graph(model: onnx.ModelProto, path: Path) -> None:
    """Save `model` (weights loaded) to `path`, with one sidecar when it is large."""
    sidecar(path).unlink(missing_ok=True)
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > PROTO_LIMIT:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=sidecar(path).name, size_threshold=1024)
    else:
        onnx.save(model, str(path))


def copy_graph(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    if sidecar(src).is_file():
        shutil.copyfile(sidecar(src), sidecar(dst))


def export_graph(module, args, path: Path, inputs, outputs, axes, exporter: str) -> None:
    """torch.onnx.export `module` to `path` (TorchScript or dynamo), saved by save_graph, then
    onnx.checker'd. `axes`: input/output name -> {axis: symbolic name}."""
    # export into a scratch dir, then re-save: large graphs come out of the exporters as one file
    # per weight (TorchScript) or with an arbitrary sidecar name (dynamo); save_graph writes one
    scratch = path.parent / f".{path.stem}-export"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints are expected here
            if exporter == "dynamo":  # the dynamo exporter translates to opset 18 and up only
                dims = {}
                shapes = tuple({ax: dims.setdefault(name, torch.export.Dim(name, min=1))
                                for ax, name in axes[i].items()} for i in inputs)
                torch.onnx.export(module, args, str(scratch / path.name), input_names=list(inputs),
                                  output_names=list(outputs), dynamic_shapes=shapes,
                                  opset_version=max(layout.OPSET, 18), dynamo=True, verbose=False)
            else:
                torch.onnx.export(module, args, str(scratch / path.name), input_names=list(inputs),
                                  output_names=list(outputs), opset_version=layout.OPSET, dynamo=False,
                                  dynamic_axes={k: v for k, v in axes.items() if k in (*inputs, *outputs)})
        save_graph(onnx.load(str(scratch / path.name)), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OnnxExportError(f"{path.name} failed onnx.checker: {str(exc).splitlines()[0]}") from None
