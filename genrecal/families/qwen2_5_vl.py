"""Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): Qwen2-VL with a windowed-attention ViT
(SwiGLU MLP, RMSNorm; full attention only in `fullatt_block_indexes`) whose patch merger projects
to `out_hidden_size`, and a Qwen2 body with M-RoPE (``model.model.language_model``).

Tokens, chat template and the image-token scheme are Qwen2-VL's (see qwen2_vl.py): the processor
expands `<|image_pad|>` to (H/patch * W/patch) / merge^2 tokens.
"""
from __future__ import annotations

from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from genrecal.families.base import Family, TokenizerSpec
from genrecal.families.qwen2_vl import CHAT_TEMPLATE, SPECIALS, mrope_ids

_SIZES = {
    # head_dim 16 -> mrope_section sums to 8. window_size is in pixels: 32 px = 2x2 merged units,
    # so a 64x64 image (4x4 merged units) has 4 windows; block 1 attends over the whole image.
    "tiny": dict(d=64, layers=2, heads=4, kv=2, vd=64, vlayers=2, patch=8, window=32, fullatt=[1],
                 mrope=[2, 3, 3], pixels=64 * 64),
    # llama.cpp's converter maps merger.mlp.{0,2} through its vision block table, so it needs >= 3 blocks;
    # windowed blocks 0 and 2, full attention every 2nd block (its n_wa_pattern), as real checkpoints
    "tiny-v4": dict(d=64, layers=2, heads=4, kv=2, vd=64, vlayers=4, patch=8, window=32, fullatt=[1, 3],
                    mrope=[2, 3, 3], pixels=64 * 64),
    "base": dict(d=128, layers=2, heads=4, kv=2, vd=128, vlayers=2, patch=8, window=32, fullatt=[1],
                 mrope=[4, 6, 6], pixels=64 * 64),
}


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=s["d"], intermediate_size=2 * s["d"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
            max_position_embeddings=1024,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": s["mrope"]},
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=s["vlayers"], hidden_size=s["vd"], intermediate_size=2 * s["vd"], num_heads=4,
            out_hidden_size=s["d"], patch_size=s["patch"], spatial_merge_size=2, temporal_patch_size=2,
            window_size=s["window"], fullatt_block_indexes=s["fullatt"],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen2_5_VLForConditionalGeneration(config)
    factor = s["patch"] * 2
    size_px = {"shortest_edge": factor * factor, "longest_edge": s["pixels"]}  # pixel counts, not sides
    image_processor = Qwen2VLImageProcessor(size=size_px, patch_size=s["patch"], merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size_px, patch_size=s["patch"], merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    name="qwen2_5_vl",
    model_class="Qwen2_5_VLForConditionalGeneration",
    tokenizer=TokenizerSpec(
        # below the corpus' BPE saturation (~460 learned tokens) so it differs from qwen2_vl's
        algorithm="bpe", vocab_size=430, special_tokens=SPECIALS,
        bos=None, eos="<|im_end|>", pad="<|endoftext|>",
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    rope_position_ids=mrope_ids,
    image_token="<|image_pad|>",
    notes="Qwen2 body with M-RoPE at model.model.language_model; windowed-attention vision tower.",
)
