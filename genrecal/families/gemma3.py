"""Gemma3 (Gemma3ForConditionalGeneration): SigLIP tower -> avg-pool + RMSNorm projector -> Gemma3
body (``model.model.language_model``) with interleaved sliding/full attention layers.

Image-token scheme: the chat template writes one `<start_of_image>`; the processor expands it to
`\\n\\n<start_of_image>` + `<image_soft_token>` * mm_tokens_per_image + `<end_of_image>\\n\\n`.
mm_tokens_per_image must be a square dividing (image/patch)^2 (the projector avg-pools the patch
grid down to sqrt(mm_tokens_per_image) per side). Images go to the processor nested per sample,
`[[img], [img]]`. `processor.image_token_id` is the begin-of-image id, so image tokens are counted
with the tokenizer's `image_token_id` (`base.image_token_id` does this).

Teacher only: the rotary embedding holds two frequency sets (sliding layers theta 1e4, full layers
theta 1e6) and its forward needs a `layer_type`, so a single `rotary(hidden, ids)` call — what the
Recalibrator's decoder layers use — cannot serve it.
"""
from __future__ import annotations

import math

from torch import nn
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3Processor,
)

from genrecal.families import register
from genrecal.families.base import Family, TokenizerSpec

# Gemma chat format; the assistant role is called "model". bos is written here, the tokenizer
# adds none, so the ids start with exactly one `<bos>`.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

NAMED_TOKENS = {
    "image_token": "<image_soft_token>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
}
SPECIALS = ("<start_of_turn>", "<end_of_turn>", *NAMED_TOKENS.values())

# text hidden/layers, vision hidden/layers, image size, patch, image tokens (4x4 pooled grid)
_SIZES = {
    "tiny": dict(d=64, layers=2, vd=64, vlayers=2, image=64, patch=8, mm_tokens=16),
    "base": dict(d=128, layers=2, vd=128, vlayers=2, image=64, patch=8, mm_tokens=16),
}


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    grid = s["image"] // s["patch"]
    side = math.isqrt(s["mm_tokens"])
    assert side * side == s["mm_tokens"] and grid % side == 0, "mm_tokens_per_image must pool the patch grid"
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in NAMED_TOKENS.items()}
    head_dim = s["d"] // 4
    config = Gemma3Config(
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=s["vd"], intermediate_size=2 * s["vd"],
            num_hidden_layers=s["vlayers"], num_attention_heads=4, image_size=s["image"],
            patch_size=s["patch"], vision_use_head=False,
        ),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=s["d"], intermediate_size=2 * s["d"],
            num_hidden_layers=s["layers"], num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
            query_pre_attn_scalar=head_dim, max_position_embeddings=1024, sliding_window=128,
            layer_types=["sliding_attention", "full_attention"] * (s["layers"] // 2),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        ),
        mm_tokens_per_image=s["mm_tokens"],
        boi_token_index=ids["boi_token"], eoi_token_index=ids["eoi_token"], image_token_index=ids["image_token"],
        tie_word_embeddings=True,
    )
    model = Gemma3ForConditionalGeneration(config)
    # transformers zero-initialises this projection (real checkpoints overwrite it); a zero matrix
    # would make a freshly built zoo model blind to its image, so draw it like every other weight.
    nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.02)
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessor(size={"height": s["image"], "width": s["image"]}),
        tokenizer=tokenizer,
        image_seq_length=s["mm_tokens"],
    )
    return model, processor


FAMILY = register(Family(
    name="gemma3",
    model_class="Gemma3ForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="unigram", vocab_size=900, special_tokens=SPECIALS,
        bos="<bos>", eos="<end_of_turn>", pad="<pad>", unk="<unk>", extra_special=NAMED_TOKENS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    student=False,
    image_token="<image_soft_token>",
    notes=(
        "Teacher only: Gemma3RotaryEmbedding.forward(x, position_ids, layer_type) keeps separate "
        "sliding (theta 1e4) and full-attention (theta 1e6) frequencies, so decoder layers need two "
        "rotary embeddings. Gemma3 body at model.model.language_model."
    ),
    edgellm_note="Edge-LLM 0.11 takes Gemma 4, not Gemma 3's vision encoder",
))
