"""The mmproj file: the vision tower + projector as llama.cpp's libmtmd ("clip") reads it.

`general.architecture = "clip"`, `clip.has_vision_encoder`, `clip.projector_type` and the
`clip.vision.*` hyper-parameters; tensors `v.*` (vision tower) and `mm.*` (projector). Kept at F16
(1-D tensors and position embeddings F32): the vision tower runs once per image and is small next to
the text model, and quantising it costs more accuracy than it saves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import gguf
import numpy as np
from gguf.constants import Keys

from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.writer import TensorWriter

MMPROJ_PRECISION = "f16"
POSITION_EMBD = "v.position_embd.weight"


@dataclass(frozen=True)
class VisionSpec:
    """The clip.vision.* hyper-parameters of one vision tower + projector."""

    projector_type: str  # llama.cpp projector name, e.g. "qwen2vl_merger", "idefics3"
    embedding_length: int  # vision hidden width
    feed_forward_length: int  # vision MLP width (must differ from embedding_length, see check())
    block_count: int
    head_count: int
    layer_norm_eps: float
    image_size: int  # nominal square side in pixels
    patch_size: int
    projection_dim: int  # width of the projector's output = the text model's hidden size
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    use_gelu: bool = False  # tanh-GELU vision MLP; False -> quick-GELU (llama.cpp's default)
    spatial_merge_size: int | None = None  # Qwen2-VL merger
    scale_factor: int | None = None  # Idefics3 pixel shuffle
    preproc_image_size: int | None = None  # Idefics3 image splitting (tiles of image_size)
    min_pixels: int | None = None
    max_pixels: int | None = None

    def check(self) -> None:
        if self.feed_forward_length == self.embedding_length:
            # clip.cpp decides whether ffn up/down were stored swapped (legacy files) by comparing
            # ffn_down's width with the embedding width; equal widths make it swap them wrongly.
            raise GgufExportError(
                f"vision MLP width == vision width ({self.embedding_length}): llama.cpp's clip loader "
                "would treat ffn_up/ffn_down as swapped and compute garbage; use an MLP ratio != 1")


def add_vision_keys(w: gguf.GGUFWriter, spec: VisionSpec) -> None:
    v = Keys.ClipVision
    w.add_bool(Keys.Clip.HAS_VISION_ENCODER, True)
    w.add_string(Keys.Clip.PROJECTOR_TYPE, spec.projector_type)
    w.add_uint32(v.EMBEDDING_LENGTH, spec.embedding_length)
    w.add_uint32(v.FEED_FORWARD_LENGTH, spec.feed_forward_length)
    w.add_uint32(v.BLOCK_COUNT, spec.block_count)
    w.add_uint32(v.Attention.HEAD_COUNT, spec.head_count)
    w.add_float32(v.Attention.LAYERNORM_EPS, spec.layer_norm_eps)
    w.add_uint32(v.IMAGE_SIZE, spec.image_size)
    w.add_uint32(v.PATCH_SIZE, spec.patch_size)
    w.add_uint32(v.PROJECTION_DIM, spec.projection_dim)
    w.add_array(v.IMAGE_MEAN, [float(x) for x in spec.image_mean])
    w.add_array(v.IMAGE_STD, [float(x) for x in spec.image_std])
    w.add_bool(v.USE_GELU, spec.use_gelu)
    optional = {v.SPATIAL_MERGE_SIZE: spec.spatial_merge_size, v.Projector.SCALE_FACTOR: spec.scale_factor,
                v.PREPROC_IMAGE_SIZE: spec.preproc_image_size, v.IMAGE_MIN_PIXELS: spec.min_pixels,
                v.IMAGE_MAX_PIXELS: spec.max_pixels}
    for key, value in optional.items():
        if value is not None:
            w.add_uint32(key, int(value))


def write_mmproj(path: Path, spec: VisionSpec, tensors: Iterable[tuple[str, np.ndarray]]) -> dict:
    """Write mmproj.gguf; returns {"tensor_types": {...}} for the manifest."""
    spec.check()
    out = TensorWriter(path, "clip", MMPROJ_PRECISION, keep_f32=(POSITION_EMBD,))
    out.gguf.add_name("genrecal mmproj")
    add_vision_keys(out.gguf, spec)
    for name, arr in tensors:
        out.add(name, arr)
    out.finish()
    return {"tensor_types": dict(out.types), "fallbacks": out.fallbacks}
