"""SmolVLM (SmolVLMForConditionalGeneration): the Idefics3 architecture with a SmolLM2 (Llama)
body at ``model.model.text_model``; the processor also owns a video processor (needs torchvision)
and `num2words`.

Image-token scheme: as Idefics3 (see idefics3.py) — `<image>` expands to
`<fake_token_around_image><global-img>` + `<image>` * image_seq_len + `<fake_token_around_image>`,
image splitting off in the zoo.
"""
from __future__ import annotations

from transformers import (
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
)

from genrecal.families.base import Family, TokenizerSpec
from genrecal.families.idefics3 import IMAGE_SPECIALS, SIZES, IdeficsClasses, build_idefics_style, idefics_template

# SmolVLM-Instruct style: `<|im_start|>User:<image> question<end_of_utterance>\nAssistant:`
CHAT_TEMPLATE = idefics_template("<|im_start|>")

_CLASSES = IdeficsClasses(
    config=SmolVLMConfig, model=SmolVLMForConditionalGeneration,
    image_processor=SmolVLMImageProcessor, processor=SmolVLMProcessor, video_processor=SmolVLMVideoProcessor,
)


def build_tiny(size: str, tokenizer, seed: int):
    return build_idefics_style(size, tokenizer, _CLASSES)


FAMILY = Family(
    name="smolvlm",
    model_class="SmolVLMForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="bpe", vocab_size=420, special_tokens=("<|im_start|>", "<|im_end|>", *IMAGE_SPECIALS),
        bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>",
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(SIZES),
    image_token="<image>",
    notes="Llama body at model.model.text_model; image splitting off in the zoo; needs num2words.",
)
