"""What a family tells ONNX export and the ONNX runtime: its vision graph and how to feed it.

Every family exports the same three graphs (onnx-community layout): ``vision_encoder.onnx``
(processor pixels -> image features already through the projector), ``embed_tokens.onnx`` and
``decoder_model_merged.onnx``. Only the vision graph differs per family, so an ``OnnxSpec`` holds
the vision wrapper, the graph's input names and dynamic axes, the exporter that gives a correct
graph for it, and how to turn the processor's output into the graph's inputs (the runtime and the
exporter share that function, so what is traced is what runs).

A registry keyed by model_type, like ``genrecal.families``: adding a family = one ``onnx_<name>.py``
exposing ``ONNX_SPECS`` and one line in ``_MODULES``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from torch import nn

from genrecal.families.base import UnsupportedFamilyError

_MODULES = {
    "llava": "genrecal.families.onnx_llava",
    "internvl": "genrecal.families.onnx_llava",
    "qwen2_vl": "genrecal.families.onnx_qwen2_vl",
    "qwen2_5_vl": "genrecal.families.onnx_qwen2_vl",
    "idefics3": "genrecal.families.onnx_idefics3",
    "smolvlm": "genrecal.families.onnx_idefics3",
}


@dataclass(frozen=True)
class OnnxSpec:
    """One family's vision graph and the facts the runtime needs."""

    family: str
    # graph input names, in the order the wrapper's forward takes them
    vision_inputs: tuple[str, ...]
    # input name -> {axis: symbolic name}; the output `image_features` is [tokens, D] always
    vision_axes: dict[str, dict[int, str]]
    # wrap(model) -> nn.Module: forward(*vision_inputs) -> image_features [tokens, text_hidden]
    wrap_vision: Callable[[nn.Module], nn.Module]
    # processor output (numpy) -> {vision input name: array}; also used to build the trace inputs
    vision_feeds: Callable[[dict], dict[str, np.ndarray]]
    exporter: str = "torchscript"  # "torchscript" | "dynamo": whichever gives a correct vision graph
    mrope: bool = False  # decoder position_ids are [3, B, L] from `rope_index`, not [B, L]
    genai: bool = False  # onnxruntime-genai knows this family (genai_config.json is written)
    notes: str = ""


def names() -> list[str]:
    return sorted(_MODULES)


def onnx_spec(family: str) -> OnnxSpec:
    """The ONNX spec of a family, or a clear error listing the families that have one."""
    if family not in _MODULES:
        raise UnsupportedFamilyError(
            f"no ONNX export for family {family!r}; families with an ONNX wrapper: {', '.join(names())}"
        )
    return importlib.import_module(_MODULES[family]).ONNX_SPECS[family]


def past_names(n_layers: int) -> list[str]:
    """The decoder graph's KV-cache inputs, layer by layer, key then value (every family; what export writes
    and the runtimes feed)."""
    return [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    """The decoder graph's KV-cache outputs, in past_names' order."""
    return [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def passthrough(*keys: str) -> Callable[[dict], dict[str, np.ndarray]]:
    """vision_feeds for processors whose output already has the graph's layout."""

    def feeds(enc: dict) -> dict[str, np.ndarray]:
        return {k: np.asarray(enc[k]) for k in keys}

    return feeds
