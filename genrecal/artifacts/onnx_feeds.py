"""What the ONNX runtime computes outside the graphs, torch-free: vision-graph feeds and M-RoPE ids.

Export records in the manifest which feed rule a family's vision graph takes (`OnnxFacts.vision_feeds`,
one of FEEDS) and whether its decoder takes M-RoPE ids; the runtime applies the rule by name, so a device
needs neither torch nor genrecal's family modules. The exporter traces its vision graph with the same
functions, so what is traced is what runs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from genrecal.errors import GenrecalError


class FeedError(GenrecalError):
    """A manifest naming a feed rule this genrecal does not know (exported by a newer genrecal)."""


def passthrough(enc: dict, inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Processors whose output already has the graph's layout: the named arrays as they are."""
    return {k: np.asarray(enc[k]) for k in inputs}


def real_images(enc: dict, inputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Idefics3 / SmolVLM: pixel_values [B, N_max, 3, H, W] padded with all-zero images -> the real
    images only, [1, n, 3, H, W] float32, and pixel_attention_mask [1, n, H, W] bool. The filtering is
    data-dependent, so it happens here and not in the graph (transformers.js feeds the same layout)."""
    pixels = np.asarray(enc["pixel_values"], dtype=np.float32)
    pixels = pixels.reshape(-1, *pixels.shape[-3:])  # [B * N_max, 3, H, W]
    real = np.any(pixels != 0.0, axis=(1, 2, 3))
    mask = enc.get("pixel_attention_mask")
    if mask is None:
        mask = np.ones((pixels.shape[0], *pixels.shape[-2:]), dtype=np.int64)
    mask = np.asarray(mask).reshape(-1, *pixels.shape[-2:]).astype(bool)
    return {"pixel_values": pixels[real][None], "pixel_attention_mask": mask[real][None]}


FEEDS: dict[str, Callable[[dict, tuple[str, ...]], dict[str, np.ndarray]]] = {
    "passthrough": passthrough,
    "real_images": real_images,
}


def vision_feeds(rule: str, enc: dict, inputs: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """Processor output (numpy) -> {vision graph input: array} by the manifest's feed rule."""
    if rule not in FEEDS:
        raise FeedError(f"unknown vision feed rule {rule!r} (known: {', '.join(FEEDS)}); upgrade genrecal")
    return FEEDS[rule](enc, tuple(inputs))


def rope_index(input_ids: np.ndarray, image_grid_thw: np.ndarray | None, attention_mask: np.ndarray | None,
               image_token_id: int, spatial_merge_size: int) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE ids for a prompt: (position_ids [3, B, L] int64, rope_deltas [B, 1] int64), as transformers'
    Qwen2-VL `get_rope_index` for image prompts.

    Text tokens advance all three axes (temporal, height, width) by 1; a run of image tokens gets
    (start + t, start + h, start + w) over its merged grid and advances the position by max(h, w).
    Images are consumed from `image_grid_thw` [n_images, 3] in order over the row-major batch. Padding
    (attention_mask 0) must sit at the ends of a row; padded slots get position 0. Decode steps then use
    `past_len + rope_delta` on every axis (mrope_decode_ids).
    """
    ids = np.asarray(input_ids).astype(np.int64)  # [B, L]
    bsz, length = ids.shape
    valid = np.ones_like(ids, dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    merge = int(spatial_merge_size)
    is_img = (ids == int(image_token_id)) & valid
    prev = np.concatenate([np.zeros_like(is_img[:, :1]), is_img[:, :-1]], axis=1)
    starts = is_img & ~prev  # first token of each image run
    if image_grid_thw is None or not is_img.any():
        grid = np.array([[1, merge, merge]], dtype=np.int64)  # unused: no image tokens
        group = np.zeros_like(ids)
    else:
        grid = np.asarray(image_grid_thw).astype(np.int64)
        group = np.clip(np.cumsum(starts.reshape(-1).astype(np.int64)) - 1, 0, None).reshape(bsz, length)
    t, hh, ww = grid[group, 0], grid[group, 1] // merge, grid[group, 2] // merge  # each [B, L]
    arange = np.broadcast_to(np.arange(length, dtype=np.int64), (bsz, length))
    run_start = np.maximum.accumulate(np.where(starts, arange, 0), axis=1)
    j = arange - run_start  # index inside the image run
    last = is_img & (j == t * hh * ww - 1)
    advance = (valid & ~is_img).astype(np.int64) + np.where(last, np.maximum(hh, ww), 0)
    start = np.cumsum(advance, axis=1) - advance  # position where each token's run starts
    img = is_img.astype(np.int64)
    pos = np.stack([start + img * (j // (hh * ww)), start + img * ((j // ww) % hh), start + img * (j % ww)])
    pos = pos * valid.astype(np.int64)  # [3, B, L]
    n_valid = valid.astype(np.int64).sum(1)
    top = np.where(valid, pos.max(0), 0).max(1)
    return pos, (top + 1 - n_valid)[:, None]


def mrope_decode_ids(past_len: int, rope_delta: np.ndarray, batch: int = 1) -> np.ndarray:
    """Decode-step ids [3, B, 1]: every axis at past_len + rope_delta, as transformers' generate feeds."""
    ids = past_len + np.asarray(rope_delta, dtype=np.int64).reshape(batch, 1)
    return np.broadcast_to(ids, (3, batch, 1)).copy()
