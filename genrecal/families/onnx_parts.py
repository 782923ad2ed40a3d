"""What a family tells ONNX export: its vision graph and how to feed it.

Every family exports the same three graphs (onnx-community layout): ``vision_encoder.onnx``
(processor pixels -> image features already through the projector), ``embed_tokens.onnx`` and
``decoder_model_merged.onnx``. Only the vision graph differs per family, so an ``OnnxSpec`` holds
the vision wrapper, the graph's input names and dynamic axes, the exporter that gives a correct
graph for it, and the name of the feed rule (genrecal.artifacts.onnx_feeds) that turns the processor's
output into the graph's inputs: the runtime applies the same rule by name, without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from torch import nn

from genrecal.artifacts.onnx_feeds import vision_feeds


@dataclass(frozen=True)
class OnnxSpec:
    """One family's vision graph and the facts the runtime needs."""

    # graph input names, in the order the wrapper's forward takes them
    vision_inputs: tuple[str, ...]
    # input name -> {axis: symbolic name}; the output `image_features` is [tokens, D] always
    vision_axes: dict[str, dict[int, str]]
    # wrap(model) -> nn.Module: forward(*vision_inputs) -> image_features [tokens, text_hidden]
    wrap_vision: Callable[[nn.Module], nn.Module]
    # rule turning the processor's output (numpy) into the graph's inputs: a name in
    # genrecal.artifacts.onnx_feeds.FEEDS, recorded in the manifest so the runtime needs no family code
    vision_feeds: str = "passthrough"
    exporter: str = "torchscript"  # "torchscript" | "dynamo": whichever gives a correct vision graph
    mrope: bool = False  # decoder position_ids are [3, B, L] from `rope_index`, not [B, L]
    # DeepStack (Qwen3-VL): model -> n, the number of text layers that add vision features of their own.
    # The wrapper's image_features are then [tokens, D * (1 + n)] (the embedding rows, then layer 0's, ...),
    # the embed graph pads every token row with n * D zeros, and the decoder takes [B, L, D * (1 + n)] and adds
    # slice i + 1 to the output of text layer i (llama.cpp's qwen3vl layout). A text row's slices are zero,
    # so the runtime's row scatter is unchanged and adds nothing where the model adds nothing.
    deepstack: Callable[[nn.Module], int] | None = None
    # hybrid bodies (Qwen3.5): wrap(model, deepstack) -> the decoder module (forward(inputs_embeds,
    # attention_mask, position_ids, *past in layout.past_names(n, layer_types) order) -> (logits, *present));
    # None: genrecal.export.onnx.wrappers.Decoder (a KV pair per layer)
    wrap_decoder: Callable[..., nn.Module] | None = None
    # hybrid bodies: config -> {"conv": [...], "recurrent": [...]} state shapes without batch (OnnxFacts)
    linear_states: Callable[[Any], dict[str, list[int]]] | None = None
    notes: str = ""

    def feeds(self, enc: dict) -> dict[str, np.ndarray]:
        """processor output (numpy) -> {vision input name: array}, as the runtime computes them."""
        return vision_feeds(self.vision_feeds, enc, self.vision_inputs)
