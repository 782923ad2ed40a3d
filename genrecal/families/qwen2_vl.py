"""Qwen2-VL (Qwen2VLForConditionalGeneration): ViT with 2-D RoPE -> patch merger -> Qwen2 body
with M-RoPE (3-section rotary: temporal, height, width).

Image-token scheme: `<|vision_start|><|image_pad|><|vision_end|>`; the processor expands
`<|image_pad|>` to (H/patch * W/patch) / merge^2 tokens, so the count depends on the image size.
"""
from __future__ import annotations

import torch
from transformers import (
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
)

from genrecal.families.base import Family, TokenizerSpec

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
    # deep8 at patch 4: 64 merged image tokens per 64 px image instead of 16; and the same with 6 vision
    # layers. Scene shape probes 50.7 % / 52.7 % (deep8: 45 %), below the 85 % criterion, so the scenes
    # benchmark keeps deep8 (benchmarks/results/quality_scenes_criteria.md)
    "deep8-p4": dict(d=64, layers=8, heads=4, kv=2, vd=128, vlayers=4, patch=4, mrope=[2, 3, 3], pixels=64 * 64),
    "deep8-p4-v6": dict(d=64, layers=8, heads=4, kv=2, vd=128, vlayers=6, patch=4, mrope=[2, 3, 3], pixels=64 * 64),
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


FAMILY = Family(
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
)
