"""Qwen3-VL (Qwen3VLForConditionalGeneration): a SigLIP2-style ViT (LayerNorm blocks, tanh-GELU MLP,
2-D axial RoPE plus a learned position grid resampled bilinearly to each image) -> patch merger, and a
Qwen3 body (QK-norm RMSNorms on q and k per head, no attention biases) with *interleaved* M-RoPE at
``model.model.language_model``.

DeepStack: `deepstack_visual_indexes` name vision blocks whose outputs go through their own patch
mergers; text layer i adds the i-th of these features to the hidden states of the image-token rows
(after the layer). So the image reaches the text model through the embedding rows *and* through the
first len(deepstack_visual_indexes) layers.

Tokens, chat template and the image-token scheme are Qwen2-VL's (qwen2_vl.py): the processor expands
`<|image_pad|>` to (H/patch * W/patch) / merge^2 tokens; ids in real checkpoints are Qwen2's.

Positions: the rotary takes [3, B, L] ids (temporal, height, width) like Qwen2-VL, but interleaves the
three over the frequencies (t h w t h w ...; `mrope_section` says how many each axis gets) instead of
giving each a contiguous block. Qwen3-VL's `get_rope_index` gives the same ids as Qwen2-VL's for image
prompts (a still image is one temporal step), so the runtimes' M-RoPE ids are shared. The Recalibrator's
fresh 1-D ids go to all three axes ([3, B, L]), which with any section split is plain 1-D RoPE.

ONNX and GGUF keep DeepStack in llama.cpp's layout: the vision output is [tokens, D * (1 + levels)] (the
merger's rows, then each DeepStack merger's) and text layer i adds slice i + 1 (OnnxSpec.deepstack; llama.cpp's
converter writes `qwen3vl` + `qwen3vl_merger`). onnxruntime-genai 0.18 drops DeepStack (its builder's decoder and
its pipeline): no genai_config.json; the builder's decoder ships with DeepStack added back by genrecal
(export/onnx/builder_decoder.py add_deepstack).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import (
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.families import qwen2_vl, register
from genrecal.families.base import ClientFacts, Family, TokenizerSpec
from genrecal.families.gguf_parts import ConverterRoute, GgufRoute
from genrecal.families.onnx_parts import OnnxSpec
from genrecal.families.qwen2_vl import CHAT_TEMPLATE, REAL_IDS, SPECIALS, QwenVision, mrope_ids, patch_layout

# Qwen3-VL's image processor (Qwen3-VL-2B-Instruct's preprocessor_config.json): SigLIP2 normalisation (every
# size) and a pixel budget of 256^2 .. 4096^2 (the real-shape size; the tiny ones keep 64x64 images)
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]
REAL_PIXELS = dict(min_pixels=256 * 256, pixels=4096 * 4096)

_SIZES = {
    # head_dim 32 -> 16 rotary frequencies; mrope_section [6, 5, 5] is Qwen3-VL's [24, 20, 20] / 4 (t h w
    # interleaved: h and w take 5 slots each in the first 15, t the rest). A 6x6 learned position grid, so
    # a 64x64 image (8x8 patches) really resamples it. DeepStack from vision blocks 0 and 1 into text layers
    # 0 and 1 of 3 (llama.cpp aborts on a level in the last layer, see converter_check); the deepstack
    # mergers are initialised like the main merger, so DeepStack is already as strong as the embedding rows.
    "tiny": dict(d=64, layers=3, heads=4, kv=2, head_dim=32, vd=64, vlayers=3, vheads=4, patch=8, grid=36,
                 deepstack=[0, 1], mrope=[6, 5, 5], pixels=64 * 64),
    # tiny with DeepStack that dominates: the deepstack mergers' outputs scaled so dropping DeepStack moves
    # the logits far more than any export tolerance (measured in tests/families/test_qwen3_vl.py): the
    # model ONNX / GGUF parity is checked on, since a runtime that drops DeepStack would still pass on a
    # model where it hardly matters
    "tiny-deepstack": dict(d=64, layers=3, heads=4, kv=2, head_dim=32, vd=64, vlayers=3, vheads=4, patch=8,
                           grid=36, deepstack=[0, 1], mrope=[6, 5, 5], pixels=64 * 64, deepstack_scale=30.0),
    "base": dict(d=128, layers=3, heads=4, kv=2, head_dim=32, vd=128, vlayers=3, vheads=4, patch=8, grid=36,
                 deepstack=[0, 1], mrope=[6, 5, 5], pixels=64 * 64),
    # Qwen3-VL-2B-Instruct's shapes (its config.json and preprocessor_config.json; random weights): build it
    # with the real Qwen2 vocabulary (`vocab_gguf=` llama.cpp's ggml-vocab-qwen2.gguf, 151,936 entries)
    "2b": dict(d=2048, ffn=6144, layers=28, heads=16, kv=8, head_dim=128, vd=1024, vffn=4096, vlayers=24,
               vheads=16, patch=16, grid=2304, deepstack=[5, 11, 17], mrope=[24, 20, 20], positions=262144,
               rope_theta=5e6, tie=True, **REAL_PIXELS),
}


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=s["d"], intermediate_size=s.get("ffn", 2 * s["d"]),
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
            head_dim=s["head_dim"], max_position_embeddings=s.get("positions", 1024), rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": s.get("rope_theta", 10000.0),
                             "mrope_section": s["mrope"], "mrope_interleaved": True},
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=s.get("tie", False),
        ),
        vision_config=dict(
            depth=s["vlayers"], hidden_size=s["vd"], intermediate_size=s.get("vffn", 2 * s["vd"]),
            num_heads=s["vheads"], patch_size=s["patch"], spatial_merge_size=2, temporal_patch_size=2,
            out_hidden_size=s["d"], num_position_embeddings=s["grid"], deepstack_visual_indexes=s["deepstack"],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s.get("tie", False),
    )
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen3VLForConditionalGeneration(config)
    if size != "2b":  # real-shape weights stay as transformers initialises them
        visible_norms_and_biases(model, seed)
    scale = s.get("deepstack_scale")
    if scale:
        with torch.no_grad():
            for merger in model.model.visual.deepstack_merger_list:
                merger.linear_fc2.weight.mul_(scale)
                merger.linear_fc2.bias.mul_(scale)
    return model, processor_for(s, tokenizer)


def processor_for(s: dict, tokenizer) -> Qwen3VLProcessor:
    """Qwen3-VL's processor (Qwen3.5 uses the same) for a zoo size `s`: patch s["patch"], merge 2, the pixel
    budget s["min_pixels"] (default one merged patch) .. s["pixels"], SigLIP2 normalisation."""
    factor = s["patch"] * 2
    size_px = {"shortest_edge": s.get("min_pixels", factor * factor), "longest_edge": s["pixels"]}  # pixel counts
    norm = {"image_mean": IMAGE_MEAN, "image_std": IMAGE_STD}
    image_processor = Qwen2VLImageProcessor(size=size_px, patch_size=s["patch"], merge_size=2,
                                            temporal_patch_size=2, **norm)
    video_processor = Qwen3VLVideoProcessor(size=size_px, patch_size=s["patch"], merge_size=2,
                                            temporal_patch_size=2, **norm)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def visible_norms_and_biases(model, seed: int) -> None:
    """transformers initialises every bias to 0 and every norm weight to 1 (LayerNorm biases 0; Qwen3.5's
    zero-centred norms, which store w - 1, to 0; Gated DeltaNet's dt_bias to 1): an export that drops a bias or
    a norm offset or swaps q_norm / k_norm would still match. Give them seeded, non-trivial values around
    their initial ones."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.02 * torch.randn(param.shape, generator=gen) + (1.0 if name.endswith("dt_bias") else 0.0))
            elif "norm" in name and name.endswith("weight"):
                centred = torch.allclose(param, torch.zeros_like(param))  # Qwen3.5's (1 + w) norms
                param.copy_((0.0 if centred else 1.0) + 0.1 * torch.randn(param.shape, generator=gen))


# ---- ONNX ----
def deepstack_layers(model) -> int:
    return len(model.config.vision_config.deepstack_visual_indexes)


class Qwen3Vision(nn.Module):
    """pixel_values [N_patches, C*T*p*p], image_grid_thw [n_images, 3] -> image_features
    [N_patches / merge^2, D_text * (1 + n_deepstack)]: the merger's output, then each DeepStack merger's
    (OnnxSpec.deepstack). HF's tower loops over images in Python (position ids, cu_seqlens, the learned
    position grid's bilinear resampling); here every per-patch fact comes from `image_grid_thw` with tensor ops
    (qwen2_vl.patch_layout) and the per-image attention split is a block-diagonal mask (as QwenVision)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.visual = model.model.visual
        self.merge = int(model.config.vision_config.spatial_merge_size)
        self.side = int(self.visual.num_grid_per_side)
        # Qwen3.5's tower (this one without DeepStack) has no deepstack_visual_indexes
        levels = getattr(model.config.vision_config, "deepstack_visual_indexes", None) or []
        self.deepstack = {int(b): i for i, b in enumerate(levels)}

    def forward(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        n = pixel_values.shape[0]
        # [1, N, E]: a leading batch axis keeps every Linear a MatMul (the int4 quantizer skips Gemm)
        x = self.visual.patch_embed(pixel_values).unsqueeze(0)
        pos_hw, frame = patch_layout(image_grid_thw, n, self.merge)  # [N, 2] block-major (row, col), [N]
        x = x + self._grid_embedding(pos_hw, self._image_hw(image_grid_thw, n)).unsqueeze(0).to(x.dtype)
        cos, sin = self.visual.rotary_pos_emb(x, pos_hw)  # [N, head_dim] each
        mask = frame.unsqueeze(1) == frame.unsqueeze(0)  # [N, N]: attention within each image frame
        features = [None] * len(self.deepstack)
        for i, blk in enumerate(self.visual.blocks):
            x = x + QwenVision._attention(blk.attn, blk.norm1(x), cos, sin, mask)
            x = x + blk.mlp(blk.norm2(x))
            if i in self.deepstack:
                k = self.deepstack[i]
                features[k] = self.visual.deepstack_merger_list[k](x[0])  # [N / merge^2, D]
        return torch.cat([self.visual.merger(x[0]), *features], dim=-1)

    @staticmethod
    def _image_hw(grid_thw: torch.Tensor, n: int) -> torch.Tensor:
        """[N, 2]: the patch grid (h, w) of the image each patch belongs to."""
        grid = grid_thw.long()
        ends = (grid[:, 0] * grid[:, 1] * grid[:, 2]).cumsum(0)
        image = (torch.arange(n, device=grid.device).unsqueeze(1) >= ends.unsqueeze(0)).long().sum(1)
        return grid[image, 1:]

    def _grid_embedding(self, pos_hw: torch.Tensor, image_hw: torch.Tensor) -> torch.Tensor:
        """The learned side x side position grid resampled bilinearly (align_corners) to each image's grid,
        at each patch: transformers' get_vision_interpolation_indices_and_weights + the weighted sum, in its
        order of operations. -> [N, E]"""
        side = self.side
        taps, weights = [], []
        for axis in range(2):
            index, size = pos_hw[:, axis].float(), image_hw[:, axis]
            src = index * (side - 1) / torch.clamp(size - 1, min=1)
            floor = torch.floor(src)
            offsets = torch.arange(0, 2, device=src.device)
            taps.append((floor.long()[:, None] + offsets).clamp(0, side - 1))  # [N, 2]
            weights.append((1 - (src[:, None] - floor[:, None] - offsets).abs()).clamp(min=0))
        indices = (taps[0][:, :, None] * side + taps[1][:, None, :]).reshape(-1, 4)  # [N, 4]
        w = (weights[0][:, :, None] * weights[1][:, None, :]).reshape(-1, 4)
        return (self.visual.pos_embed(indices) * w[:, :, None]).sum(1)


ONNX = OnnxSpec(
    vision_inputs=("pixel_values", "image_grid_thw"),
    vision_axes={"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"}},
    wrap_vision=Qwen3Vision, mrope=True, deepstack=deepstack_layers,
    notes="vision rewritten with tensor arithmetic (learned grid resampled in-graph); DeepStack features "
          "concatenated to the image features and added by the decoder; M-RoPE ids computed outside the graph",
)


# ---- GGUF (llama.cpp's converter) ----
def converter_check(hf_dir: Path) -> None:
    """llama.cpp (llama-cpp-python 0.3.36) adds DeepStack slice i + 1 after text layer i with all of the batch's
    rows, but its last layer keeps only the output rows: a DeepStack level on the last text layer aborts it
    (GGML_ASSERT ggml_can_repeat, measured with 2 levels on 2 layers). Real checkpoints stack into early layers."""
    config = json.loads((Path(hf_dir) / "config.json").read_text())
    levels = len(config.get("vision_config", {}).get("deepstack_visual_indexes", []))
    layers = config.get("text_config", {}).get("num_hidden_layers", 0)
    if levels >= layers:
        raise GgufExportError(f"{hf_dir}: {levels} DeepStack levels into {layers} text layers; llama.cpp aborts "
                              f"when one reaches the last layer (it needs more text layers than levels)")


GGUF = GgufRoute(
    text_arch="qwen3vl", projector_type="qwen3vl_merger", image_placeholder=qwen2_vl.GGUF_IMAGE_PLACEHOLDER,
    prompt_format=qwen2_vl.gguf_prompt_format,
    converter=ConverterRoute(check=converter_check, pre_tokenizer="required"), zoo_size="tiny-deepstack",
)


FAMILY = register(Family(
    name="qwen3_vl",
    model_class="Qwen3VLForConditionalGeneration",
    tokenizer=TokenizerSpec(
        # below the corpus' BPE saturation (~460 learned tokens) and apart from qwen2_5_vl's 430, so the
        # learned vocabulary differs from every other Qwen family's
        algorithm="bpe", vocab_size=445, special_tokens=SPECIALS,
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", real_ids=REAL_IDS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    rope_position_ids=mrope_ids,
    image_token="<|image_pad|>",
    onnx=ONNX,
    gguf=GGUF,
    # onnxruntime-genai 0.18's builder writes a Qwen3-VL decoder without DeepStack: no genai_config.json (genai's
    # own pipeline would drop it). --onnx-decoder auto takes the builder's decoder with DeepStack added back by
    # genrecal (builder_decoder.add_deepstack: the same inputs_embeds layout as genrecal's decoder), so
    # transformers.js still runs it as it runs genrecal's graphs (DeepStack inside them)
    clients=ClientFacts(onnx_decoder_auto="builder"),
    notes="Qwen3 body (QK-norm) with interleaved M-RoPE at model.model.language_model; DeepStack adds "
          "features of early vision blocks to the first text layers' image rows.",
    edgellm=True,  # Edge-LLM 0.11 exports Qwen3-VL with its vision tower (tests/export/test_edgellm_slow.py)
    edgellm_images="grid",
))
