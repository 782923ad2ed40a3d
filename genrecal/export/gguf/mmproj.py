"""The mmproj file: the vision tower + projector as llama.cpp's libmtmd ("clip") reads it.

`general.architecture = "clip"`, `clip.has_vision_encoder`, `clip.projector_type` and the
`clip.vision.*` hyper-parameters; tensors `v.*` (vision tower) and `mm.*` (projector). Kept at F16
(1-D tensors and position embeddings F32): the vision tower runs once per image and is small next to
the text model, and quantising it costs more accuracy than it saves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import gguf
import numpy as np
from gguf.constants import Keys

from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.writer import TensorWriter
from genrecal.families.gguf_parts import VisionSpec

MMPROJ_PRECISION = "f16"
POSITION_EMBD = "v.position_embd.weight"


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
