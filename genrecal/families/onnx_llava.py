"""ONNX vision graphs for fixed-size towers: LLaVA (CLIP -> MLP projector) and InternVL
(InternViT -> pixel shuffle -> MLP projector). Both take pixel_values [n_images, 3, H, W] and
export correctly with TorchScript (the landscape probe measured ~2e-8 against HF).
"""
from __future__ import annotations

import torch
from torch import nn

from genrecal.families.onnx_base import OnnxSpec, passthrough


class LlavaVision(nn.Module):
    """pixel_values [n, 3, H, W] -> image_features [n * patches, D_text].

    HF's `get_image_features` returns a Python list per image, which the tracer unrolls into a
    fixed-count Split; this wrapper keeps the batch axis whole so one graph serves any n.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        layer = cfg.vision_feature_layer
        self.layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        self.drop_cls = cfg.vision_feature_select_strategy == "default"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states
        picked = [hidden[i][:, 1:] if self.drop_cls else hidden[i] for i in self.layers]
        feats = self.projector(torch.cat(picked, dim=-1))  # [n, patches, D_text]
        return feats.reshape(-1, feats.shape[-1])


class InternVLVision(nn.Module):
    """pixel_values [n_tiles, 3, H, W] -> image_features [n_tiles * tokens, D_text]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        return feats.reshape(-1, feats.shape[-1])


_PIXELS = {"pixel_values": {0: "num_images"}}

ONNX_SPECS = {
    "llava": OnnxSpec(
        family="llava", vision_inputs=("pixel_values",), vision_axes=_PIXELS,
        wrap_vision=LlavaVision, vision_feeds=passthrough("pixel_values"),
    ),
    "internvl": OnnxSpec(
        family="internvl", vision_inputs=("pixel_values",), vision_axes=_PIXELS,
        wrap_vision=InternVLVision, vision_feeds=passthrough("pixel_values"),
        notes="one tile per image (crop_to_patches off in the zoo); tiles are just more rows",
    ),
}
