"""Qwen2-VL (Qwen2VLForConditionalGeneration): ViT with 2-D RoPE -> patch merger -> Qwen2 body
with M-RoPE (3-section rotary: temporal, height, width).

Image-token scheme: `<|vision_start|><|image_pad|><|vision_end|>`; the processor expands
`<|image_pad|>` to (H/patch * W/patch) / merge^2 tokens, so the count depends on the image size.

ONNX: ONNX for Qwen2-VL and Qwen2.5-VL: a vision wrapper written from tensor arithmetic, and M-RoPE
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

GGUF: Qwen2-VL -> GGUF: text arch `qwen2vl` (Qwen2 body with M-RoPE) + mmproj `qwen2vl_merger`.

Text: no q/k permutation (llama.cpp's qwen2vl uses the same rotate-half RoPE as HF); the three
M-RoPE sections (temporal, height, width) go to `qwen2vl.rope.dimension_sections`, padded to 4.
Vision: the Conv3d patch embedding [embed, 3, t=2, p, p] is split on its temporal axis into
`v.patch_embd.weight` and `v.patch_embd.weight.1` (llama.cpp runs two Conv2d and adds them, which
is the same sum for a still image repeated over both frames); the fused qkv is split into q, k, v;
the merger's LayerNorm becomes `v.post_ln` and its MLP `mm.0` / `mm.2`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from gguf.constants import MODEL_TENSOR, VisionProjectorType
from torch import nn
from transformers import (
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import PromptFormat
from genrecal.families import register
from genrecal.families.base import ClientFacts, Family, TokenizerSpec
from genrecal.families.gguf_parts import GgufRoute, GgufTensorMap, VisionSpec, add_decoder_keys, decoder_tensors, tensor_name, to_numpy
from genrecal.families.onnx_parts import OnnxSpec

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIALS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# their ids in Qwen2-VL / Qwen2.5-VL checkpoints (Qwen2's 151,643 BPE entries come first)
REAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
            "<|vision_end|>": 151653, "<|image_pad|>": 151655, "<|video_pad|>": 151656}

_SIZES = {
    # head_dim 16 -> mrope_section sums to 8
    "tiny": dict(d=64, layers=2, heads=4, kv=2, vd=64, vlayers=2, patch=8, mrope=[2, 3, 3], pixels=64 * 64),
    "base": dict(d=128, layers=2, heads=4, kv=2, vd=128, vlayers=2, patch=8, mrope=[4, 6, 6], pixels=64 * 64),
    # GGUF tests: every quantised row (256 or 768 wide) is a multiple of 256, so llama.cpp's K-quants
    # really run (else Q4_K silently falls back to Q5_0); head_dim 64 -> mrope_section sums to 32.
    # The vision tower stays tiny (mlp_ratio 2: FFN width != embed width, see export-landscape.md).
    "gguf": dict(d=256, ffn=768, layers=2, heads=4, kv=2, vd=64, vlayers=2, patch=8, mrope=[8, 12, 12],
                 pixels=64 * 64),
    # the scenes quality benchmark's student: 8 text layers (4x the Recalibrator's 2), a vision tower big
    # enough that linear probes read every asked attribute of a scene (genrecal.benchmarks.quality_scenes)
    "deep8": dict(d=64, layers=8, heads=4, kv=2, vd=128, vlayers=4, patch=8, mrope=[2, 3, 3], pixels=64 * 64),
    # Qwen2-VL-2B's shapes (its config.json and preprocessor_config.json; random weights): build it with
    # the real Qwen2 vocabulary (`vocab_gguf=` llama.cpp's ggml-vocab-qwen2.gguf, 151,936 entries)
    "2b": dict(d=1536, ffn=8960, layers=28, heads=12, kv=2, vd=1280, vlayers=32, vheads=16, mlp_ratio=4,
               patch=14, mrope=[16, 24, 24], min_pixels=56 * 56, pixels=28 * 28 * 16384, positions=32768,
               rope_theta=1e6, tie=True),
}


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=s["d"], intermediate_size=s.get("ffn", 2 * s["d"]),
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
            max_position_embeddings=s.get("positions", 1024),
            rope_parameters={"rope_type": "default", "rope_theta": s.get("rope_theta", 10000.0),
                             "mrope_section": s["mrope"]},
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=s["vlayers"], embed_dim=s["vd"], hidden_size=s["d"], num_heads=s.get("vheads", 4),
            mlp_ratio=s.get("mlp_ratio", 2), patch_size=s["patch"], spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s.get("tie", False),
    )
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen2VLForConditionalGeneration(config)
    factor = s["patch"] * 2
    size_px = {"shortest_edge": s.get("min_pixels", factor * factor), "longest_edge": s["pixels"]}  # pixel counts
    image_processor = Qwen2VLImageProcessor(
        size=size_px, patch_size=s["patch"], merge_size=2, temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(
        size=size_px, patch_size=s["patch"], merge_size=2, temporal_patch_size=2,
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def mrope_ids(ids: torch.Tensor) -> torch.Tensor:
    """The Recalibrator's 1-D ids on all three M-RoPE sections: [B, L] -> [3, B, L]."""
    return ids.unsqueeze(0).expand(3, *ids.shape)



# ---- ONNX ----
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


_AXES = {"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"}}

ONNX = OnnxSpec(
    vision_inputs=("pixel_values", "image_grid_thw"), vision_axes=_AXES, wrap_vision=QwenVision, mrope=True,
    notes="vision rewritten with tensor arithmetic; M-RoPE ids computed outside the graph",
)


# ---- GGUF (genrecal's writer) ----
# what the chat template renders for one image part; libmtmd writes vision_start/end itself
GGUF_IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
# llama.cpp (llama-cpp-python 0.3.36) runs qwen2vl's text RMSNorms with eps 0 whatever the file says
# (see notes()). Parity is checked against PyTorch run with that eps, so the conversion itself is held to
# the default tolerance; the difference from the original eps is measured and recorded beside it.
RUNTIME_TEXT_RMS_EPS = 0.0

_BLOCK = {  # HF suffix inside visual.blocks.{i} -> gguf tensor (qkv handled separately)
    "norm1": MODEL_TENSOR.V_ENC_INPUT_NORM,
    "norm2": MODEL_TENSOR.V_ENC_POST_ATTN_NORM,
    "attn.proj": MODEL_TENSOR.V_ENC_ATTN_O,
    "mlp.fc1": MODEL_TENSOR.V_ENC_FFN_UP,
    "mlp.fc2": MODEL_TENSOR.V_ENC_FFN_DOWN,
}
_QKV = (MODEL_TENSOR.V_ENC_ATTN_Q, MODEL_TENSOR.V_ENC_ATTN_K, MODEL_TENSOR.V_ENC_ATTN_V)
_MERGER = {"ln_q": "v.post_ln", "mlp.0": "mm.0", "mlp.2": "mm.2"}  # merger LayerNorm, MLP in/out


def gguf_text_keys(w, model, n_vocab: int) -> None:
    cfg = model.config.get_text_config()
    add_decoder_keys(w, cfg, n_vocab)
    sections = list(cfg.rope_parameters.get("mrope_section") or [])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if not sections or sum(sections) * 2 != head_dim or len(sections) > 4:
        raise GgufExportError(f"mrope_section {sections} must have <= 4 parts summing to head_dim/2 = {head_dim // 2}")
    w.add_rope_dimension_sections(sections + [0] * (4 - len(sections)))


def gguf_text_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    return decoder_tensors(model, permute_qk=False)


def gguf_vision_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    visual = model.model.visual
    patch = to_numpy(visual.patch_embed.proj.weight)  # [embed, 3, t, p, p]
    if patch.ndim != 5 or patch.shape[2] != 2:
        raise GgufExportError(f"expected a Conv3d patch embedding with temporal size 2, got {patch.shape}")
    yield "v.patch_embd.weight", patch[:, :, 0]
    yield "v.patch_embd.weight.1", patch[:, :, 1]
    for name, param in visual.blocks.named_parameters():
        bid, rest = name.split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module == "attn.qkv":  # rows [3 * embed]: q, then k, then v
            for tensor, part in zip(_QKV, np.split(to_numpy(param), 3, axis=0)):
                yield tensor_name(tensor, kind, bid), part
        elif module in _BLOCK:
            yield tensor_name(_BLOCK[module], kind, bid), to_numpy(param)
        else:
            raise GgufExportError(f"vision tensor visual.blocks.{name} has no llama.cpp counterpart")
    for name, param in visual.merger.named_parameters():
        module, kind = name.rsplit(".", 1)
        if module not in _MERGER:
            raise GgufExportError(f"merger tensor visual.merger.{name} has no llama.cpp counterpart")
        yield f"{_MERGER[module]}.{kind}", to_numpy(param)


def gguf_vision_spec(model, image_processor) -> VisionSpec:
    vcfg = model.config.vision_config
    fc1 = model.model.visual.blocks[0].mlp.fc1.weight  # [mlp width, embed]
    size = image_processor.size
    if getattr(vcfg, "hidden_act", "quick_gelu") != "quick_gelu":
        raise GgufExportError(f"Qwen2-VL vision hidden_act {vcfg.hidden_act!r}: llama.cpp runs quick_gelu")
    return VisionSpec(
        projector_type=VisionProjectorType.QWEN2VL,
        embedding_length=vcfg.embed_dim,
        feed_forward_length=int(fc1.shape[0]),
        block_count=vcfg.depth,
        head_count=vcfg.num_heads,
        layer_norm_eps=1e-6,  # nn.LayerNorm(eps=1e-6) in Qwen2-VL's vision blocks and merger
        image_size=int(round(size["longest_edge"] ** 0.5)),
        patch_size=vcfg.patch_size,
        projection_dim=model.config.get_text_config().hidden_size,
        image_mean=tuple(image_processor.image_mean),
        image_std=tuple(image_processor.image_std),
        spatial_merge_size=vcfg.spatial_merge_size,
        min_pixels=size["shortest_edge"],
        max_pixels=size["longest_edge"],
    )


def gguf_notes(model, tokenizer) -> list[str]:
    """Known, measured differences from PyTorch, recorded in the manifest."""
    eps = model.config.get_text_config().rms_norm_eps
    return [f"llama.cpp in llama-cpp-python 0.3.36 loads qwen2vl with RMSNorm eps 0 (it ignores "
            f"qwen2vl.attention.layer_norm_rms_epsilon = {eps:g}): negligible when hidden-state mean squares "
            f">> {eps:g}; on the tiny test models (hidden 256) it moves logits by 5e-3..1.1e-2"]


def gguf_prompt_format(image_processor) -> PromptFormat:
    """Qwen2-VL's smart resize (sides multiples of patch*merge, pixels within [min, max]); libmtmd
    writes <|vision_start|> / <|vision_end|> around the image itself."""
    size = image_processor.size
    rule = {"mode": "qwen2vl", "factor": image_processor.patch_size * image_processor.merge_size,
            "min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"],
            "resample": int(image_processor.resample)}
    return PromptFormat(placeholder=GGUF_IMAGE_PLACEHOLDER, image_rule=rule)

GGUF = GgufRoute(
    text_arch="qwen2vl", projector_type=VisionProjectorType.QWEN2VL, image_placeholder=GGUF_IMAGE_PLACEHOLDER,
    prompt_format=gguf_prompt_format, notes=gguf_notes, runtime_text_rms_eps=RUNTIME_TEXT_RMS_EPS,
    tensors=GgufTensorMap(add_text_keys=gguf_text_keys, text_tensors=gguf_text_tensors,
                          vision_spec=gguf_vision_spec, vision_tensors=gguf_vision_tensors),
)


FAMILY = register(Family(
    name="qwen2_vl",
    model_class="Qwen2VLForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="bpe", vocab_size=1000, special_tokens=SPECIALS,
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", real_ids=REAL_IDS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    rope_position_ids=mrope_ids,
    image_token="<|image_pad|>",
    onnx=ONNX,
    gguf=GGUF,
    # onnxruntime-genai 0.18 has no qwen2_vl type: its qwen2_5_vl pipeline runs this export. --onnx-decoder auto:
    # the builder's decoder, written from these text weights in a Qwen2.5-VL shell (builder_decoder.py)
    clients=ClientFacts(genai_type="qwen2_5_vl", onnx_decoder_auto="builder"),
    edgellm_note="Edge-LLM 0.11 exports Qwen2-VL's text model only (no Qwen2-VL vision encoder)",
))
