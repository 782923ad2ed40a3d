"""ONNX for Qwen2-VL and Qwen2.5-VL: a vision wrapper written from tensor arithmetic, and M-RoPE
position ids computed outside the graph.

HF's vision tower does not export: it loops over `image_grid_thw` in Python (rotary positions,
`cu_seqlens`, Qwen2.5's window index) and splits attention per image. TorchScript then bakes the
traced grid into the graph and silently drops `image_grid_thw`; dynamo refuses the data-dependent
split. `QwenVision` derives every per-patch fact (image, frame, (h, w) position, window) from
`image_grid_thw` with tensor ops and replaces the per-image split (and Qwen2.5's window
permutation) by a block-diagonal attention mask, which is the same attention: softmax over the
same keys, in a different memory order.

The decoder's rotary takes [3, B, L] ids (temporal, height, width); `rope_index` equals HF's
`get_rope_index` for image prompts, and decode steps use `past_len + rope_delta`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from genrecal.families.onnx_base import OnnxSpec, passthrough


def rope_index(input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor | None,
               config) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE ids for a prompt: (position_ids [3, B, L], rope_deltas [B, 1]), as HF's get_rope_index.

    Text tokens advance all three axes by 1; a run of image tokens gets (start + t, start + h,
    start + w) over its merged grid and advances the position by max(h, w). Images are consumed
    from `image_grid_thw` in order over the (row-major) batch. Padding (attention_mask 0) must
    sit at the ends of a row (left or right padding); padded slots get position 0.
    """
    ids = torch.as_tensor(input_ids).long()  # [B, L]
    bsz, length = ids.shape
    valid = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else torch.as_tensor(attention_mask).bool()
    merge = int(config.vision_config.spatial_merge_size)
    is_img = (ids == int(config.image_token_id)) & valid
    prev = torch.cat([torch.zeros_like(is_img[:, :1]), is_img[:, :-1]], dim=1)
    starts = is_img & ~prev  # first token of each image run
    if image_grid_thw is None or not bool(is_img.any()):
        grid = torch.tensor([[1, merge, merge]])  # unused: no image tokens
        group = torch.zeros_like(ids)
    else:
        grid = torch.as_tensor(image_grid_thw).long()
        group = (starts.reshape(-1).long().cumsum(0) - 1).clamp(min=0).reshape(bsz, length)
    t, hh, ww = grid[group, 0], grid[group, 1] // merge, grid[group, 2] // merge  # each [B, L]
    arange = torch.arange(length).expand(bsz, length)
    run_start = torch.cummax(torch.where(starts, arange, torch.zeros_like(arange)), dim=1).values
    j = arange - run_start  # index inside the image run
    last = is_img & (j == t * hh * ww - 1)
    advance = (valid & ~is_img).long() + torch.where(last, torch.maximum(hh, ww), torch.zeros_like(hh))
    start = advance.cumsum(1) - advance  # position where each token's run starts
    img = is_img.long()
    pos = torch.stack([start + img * (j // (hh * ww)), start + img * ((j // ww) % hh), start + img * (j % ww)])
    pos = pos * valid.long()  # [3, B, L]
    n_valid = valid.long().sum(1)
    top = torch.where(valid, pos.max(0).values, torch.zeros_like(ids)).max(1).values
    return pos, (top + 1 - n_valid).unsqueeze(1)


def patch_layout(grid_thw: torch.Tensor, n_patches: int | torch.Tensor, merge: int):
    """Per-patch facts from the grid, in the processor's block-major patch order.

    Returns (pos_hw [N, 2] patch row/column, frame [N] a unique id per image frame).
    """
    grid = grid_thw.long()
    sizes = grid[:, 0] * grid[:, 1] * grid[:, 2]  # [n_images]
    ends = sizes.cumsum(0)
    idx = torch.arange(n_patches, device=grid.device)  # [N]
    image = (idx.unsqueeze(1) >= ends.unsqueeze(0)).long().sum(1)  # [N] which image
    local = idx - (ends - sizes)[image]
    h, w = grid[image, 1], grid[image, 2]
    frame = (ends - sizes)[image] + (local // (h * w)) * (h * w)
    j = local % (h * w)
    # the processor orders patches as (h/m, w/m, m, m): merge blocks row-major, then inside a block
    block = merge * merge
    per_row = (w // merge) * block
    row_blk, rest = j // per_row, j % per_row
    col_blk, inner = rest // block, rest % block
    pos_h = row_blk * merge + inner // merge
    pos_w = col_blk * merge + inner % merge
    return torch.stack([pos_h, pos_w], dim=1), frame


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class QwenVision(nn.Module):
    """pixel_values [N_patches, C*T*p*p], image_grid_thw [n_images, 3] -> image_features
    [N_patches / merge^2, D_text]. Works for Qwen2-VL (full attention everywhere) and Qwen2.5-VL
    (window attention except in `fullatt_block_indexes`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.visual = model.model.visual
        vc = model.config.vision_config
        self.merge = int(vc.spatial_merge_size)
        window = getattr(vc, "window_size", None)
        self.window = window // self.merge // vc.patch_size if window else None  # in merged units
        depth = len(self.visual.blocks)
        self.full_blocks = set(vc.fullatt_block_indexes) if self.window else set(range(depth))

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        # a leading batch axis of 1 keeps every Linear a MatMul (2-D inputs export as Gemm, which
        # the int4 weight-only quantizer does not touch)
        x = self.visual.patch_embed(pixel_values).unsqueeze(0)  # [1, N, E]
        pos_hw, frame = patch_layout(image_grid_thw, pixel_values.shape[0], self.merge)
        cos, sin = self.visual.rotary_pos_emb(x, pos_hw)  # [N, head_dim] each
        same_frame = frame.unsqueeze(1) == frame.unsqueeze(0)  # [N, N] block-diagonal per frame
        same_window = same_frame
        if self.window:
            win = pos_hw // (self.merge * self.window)  # [N, 2] window row/column
            same_window = same_frame & (win.unsqueeze(1) == win.unsqueeze(0)).all(-1)
        for i, blk in enumerate(self.visual.blocks):
            mask = same_frame if i in self.full_blocks else same_window
            x = x + self._attention(blk.attn, blk.norm1(x), cos, sin, mask)
            x = x + blk.mlp(blk.norm2(x))
        merger = self.visual.merger  # ln_q, then merge^2 neighbouring patches into one row, then mlp
        merged = merger.ln_q(x).reshape(1, -1, merger.hidden_size)  # [1, N / merge^2, E * merge^2]
        return merger.mlp(merged)[0]  # [N / merge^2, D_text]

    @staticmethod
    def _attention(attn: nn.Module, x, cos, sin, mask):
        n = x.shape[1]
        q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 2, 0, 3).unbind(0)  # [H, N, d]
        cos, sin = cos.unsqueeze(0).float(), sin.unsqueeze(0).float()
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        scores = torch.matmul(q, k.transpose(1, 2)) * attn.scaling  # [H, N, N]
        scores = scores.masked_fill(~mask.unsqueeze(0), float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [H, N, d]
        return attn.proj(out.transpose(0, 1).reshape(1, n, -1))  # [1, N, E]


def mrope_decode_ids(past_len: int, rope_delta: np.ndarray, batch: int = 1) -> np.ndarray:
    """Decode-step ids [3, B, 1]: every axis at past_len + rope_delta, as HF generate feeds."""
    ids = past_len + np.asarray(rope_delta, dtype=np.int64).reshape(batch, 1)
    return np.broadcast_to(ids, (3, batch, 1)).copy()


_AXES = {"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"}}


def _spec(name: str, genai: bool) -> OnnxSpec:
    return OnnxSpec(
        family=name, vision_inputs=("pixel_values", "image_grid_thw"), vision_axes=_AXES,
        wrap_vision=QwenVision, vision_feeds=passthrough("pixel_values", "image_grid_thw"), mrope=True,
        genai=genai, notes="vision rewritten with tensor arithmetic; M-RoPE ids computed outside the graph",
    )


# genai=True for both: onnxruntime-genai's qwen2_5_vl pipeline runs either export (export/onnx/genai.py)
ONNX_SPECS = {"qwen2_vl": _spec("qwen2_vl", genai=True), "qwen2_5_vl": _spec("qwen2_5_vl", genai=True)}
