"""LLaVA (LlavaForConditionalGeneration): CLIP tower -> MLP projector -> Llama body.

Image-token scheme: one `<image>` placeholder expanded by the processor to (image/patch)^2 tokens
(the CLS feature is dropped by the "default" feature-select strategy).
"""
from __future__ import annotations

from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from genrecal.families.base import Family, TokenizerSpec

# Vicuna-style template; list content so images can sit anywhere in a user turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# text hidden/layers, vision hidden/layers, image size, patch
_SIZES = {
    "tiny": dict(d=64, layers=2, vd=64, vlayers=2, image=32, patch=8),
    "base": dict(d=128, layers=2, vd=128, vlayers=2, image=64, patch=8),
    # the scenes benchmark's teacher: 6 text layers and a 4-layer tower (the student deep8's tower size); `base`
    # measured 42 % on held-out scenes with a shape probe of 42 % (benchmarks/results/quality_scenes_criteria.md)
    "deep6": dict(d=128, layers=6, vd=128, vlayers=4, image=64, patch=8),
}


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    vision = CLIPVisionConfig(
        hidden_size=s["vd"], intermediate_size=2 * s["vd"], num_hidden_layers=s["vlayers"],
        num_attention_heads=4, image_size=s["image"], patch_size=s["patch"], projection_dim=s["vd"],
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=s["d"], intermediate_size=2 * s["d"],
        num_hidden_layers=s["layers"], num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=False,
    )
    config.pad_token_id = tokenizer.pad_token_id
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": s["image"]}, crop_size={"height": s["image"], "width": s["image"]},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=s["patch"],
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    name="llava",
    model_class="LlavaForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="wordpiece", vocab_size=800, special_tokens=("<image>",),
        bos="<s>", eos="</s>", pad="<pad>", unk="[UNK]",
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    image_token="<image>",
)
