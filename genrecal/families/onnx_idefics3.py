"""ONNX vision graph for Idefics3 and SmolVLM (SigLIP-style ViT -> pixel shuffle -> projector).

The processor pads every sample to the same image count with all-zero images; HF drops them
before the tower. That filtering is data-dependent, so it happens here in `vision_feeds` (outside
the graph) and the graph sees only real images, in the processor's own rank and dtypes (as
transformers.js feeds them): pixel_values [1, n, 3, H, W] float32 and pixel_attention_mask
[1, n, H, W] bool. The batch axis is fixed at 1 (one prompt per call; the exporter specialises
size-1 axes). TorchScript produced an invalid graph for this tower (a float index into Gather),
dynamo a correct one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from genrecal.families.onnx_base import OnnxSpec


class IdeficsVision(nn.Module):
    """pixel_values [1, n, 3, H, W], pixel_attention_mask [1, n, H, W] bool -> image_features [n * seq, D_text]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision = model.model.vision_model
        self.connector = model.model.connector
        self.patch = model.config.vision_config.patch_size

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.flatten(0, 1)  # [n, 3, H, W]
        n, _, height, width = pixel_values.shape
        p = self.patch
        pixel_attention_mask = pixel_attention_mask.flatten(0, 1).long()  # [n, H, W]
        # a patch takes part if any of its pixels is real (HF does the same with two unfolds)
        cells = pixel_attention_mask.reshape(n, height // p, p, width // p, p)
        patch_mask = cells.sum(dim=(2, 4)) > 0  # [n, H/p, W/p]
        hidden = self.vision(pixel_values=pixel_values, patch_attention_mask=patch_mask).last_hidden_state
        feats = self.connector(hidden)  # [n, seq, D_text]
        return feats.reshape(-1, feats.shape[-1])


def vision_feeds(enc: dict) -> dict[str, np.ndarray]:
    """[B, N_max, 3, H, W] with zero padding images -> the real images only, as [1, n, 3, H, W] + a
    [1, n, H, W] bool mask."""
    pixels = np.asarray(enc["pixel_values"], dtype=np.float32)
    pixels = pixels.reshape(-1, *pixels.shape[-3:])  # [B * N_max, 3, H, W]
    real = np.any(pixels != 0.0, axis=(1, 2, 3))
    mask = enc.get("pixel_attention_mask")
    if mask is None:
        mask = np.ones((pixels.shape[0], *pixels.shape[-2:]), dtype=np.int64)
    mask = np.asarray(mask).reshape(-1, *pixels.shape[-2:]).astype(bool)
    return {"pixel_values": pixels[real][None], "pixel_attention_mask": mask[real][None]}


_AXES = {"pixel_values": {1: "num_images"}, "pixel_attention_mask": {1: "num_images"}}


def _spec(name: str) -> OnnxSpec:
    return OnnxSpec(
        family=name, vision_inputs=("pixel_values", "pixel_attention_mask"), vision_axes=_AXES,
        wrap_vision=IdeficsVision, vision_feeds=vision_feeds, exporter="dynamo",
        notes="image splitting off: H, W are fixed by the processor's max_image_size",
    )


ONNX_SPECS = {"idefics3": _spec("idefics3"), "smolvlm": _spec("smolvlm")}
