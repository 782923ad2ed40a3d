"""InternVL (InternVLForConditionalGeneration): InternViT -> pixel-shuffle MLP projector -> Qwen2
body (``model.model.language_model``).

Image-token scheme: the chat template writes one `<IMG_CONTEXT>`; the processor expands it to
`<img>` + `<IMG_CONTEXT>` * image_seq_length * tiles + `</img>`, with
image_seq_length = (image/patch)^2 * downsample_ratio^2. The zoo turns tiling (crop_to_patches)
off, so every image is one tile. The processor finds these tokens through tokenizer attributes
(start_image_token, end_image_token, context_image_token, video_token), which the zoo's tokenizer
carries as `extra_special_tokens`.
"""
from __future__ import annotations

from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
)

from genrecal.families.base import Family, TokenizerSpec

# InternVL3-hf style ChatML; an image part is `<IMG_CONTEXT>\n`.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
SPECIALS = ("<|im_start|>", "<|im_end|>", *NAMED_TOKENS.values())

# text hidden/layers, vision hidden/layers, image size, patch; downsample_ratio 0.5 everywhere
_SIZES = {
    "tiny": dict(d=64, layers=2, vd=64, vlayers=2, image=64, patch=8),
    # llama.cpp's converter maps the projector's mlp1.{0,1,3} through its vision block table: >= 4 blocks
    "tiny-v4": dict(d=64, layers=2, vd=64, vlayers=4, image=64, patch=8),
    "base": dict(d=128, layers=2, vd=128, vlayers=2, image=64, patch=8),
}
_DOWNSAMPLE = 0.5


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    seq_len = int((s["image"] // s["patch"]) ** 2 * _DOWNSAMPLE**2)  # context tokens per tile
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=s["vd"], intermediate_size=2 * s["vd"], num_hidden_layers=s["vlayers"],
            num_attention_heads=4, image_size=[s["image"], s["image"]], patch_size=[s["patch"], s["patch"]],
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=len(tokenizer), hidden_size=s["d"], intermediate_size=2 * s["d"],
            num_hidden_layers=s["layers"], num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=seq_len,
        downsample_ratio=_DOWNSAMPLE,
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)
    px = {"height": s["image"], "width": s["image"]}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=px, crop_to_patches=False, max_patches=1),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=px),
        image_seq_length=seq_len,
    )
    return model, processor


FAMILY = Family(
    name="internvl",
    model_class="InternVLForConditionalGeneration",
    tokenizer=TokenizerSpec(
        # below the corpus' saturation (~95 pieces) so the pieces differ from gemma3's unigram
        algorithm="unigram", vocab_size=400, special_tokens=SPECIALS,
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk="<unk>", extra_special=NAMED_TOKENS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    image_token="<IMG_CONTEXT>",
    notes="Qwen2 body at model.model.language_model; tiling (crop_to_patches) off in the zoo.",
)
