"""Idefics3 (Idefics3ForConditionalGeneration): SigLIP-style ViT -> pixel-shuffle connector ->
Llama body (``model.model.text_model``).

Image-token scheme: the chat template writes one `<image>`; the processor expands it to
`<fake_token_around_image><global-img>` + `<image>` * image_seq_len + `<fake_token_around_image>`,
with image_seq_len = (image/patch)^2 / scale_factor^2. Image splitting (a grid of
`<row_i_col_j>` tiles before the global image) is off in the zoo's plain sizes, so every image costs
the same number of tokens whatever its size; the "-split" sizes turn it on as real checkpoints ship
(longest edge resized to SPLIT_TILES x image, cut into image x image tiles: up to 16 tiles + the
global image, so one image costs 17 x image_seq_len tokens).

SmolVLM shares this architecture and processor scheme; `build_idefics_style` is the builder both
families use (smolvlm.py passes its own classes).
"""
from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
)

from genrecal.families.base import Family, TokenizerSpec

# Image-token markers shared by Idefics3 and SmolVLM; the row/col tags appear only with splitting.
IMAGE_SPECIALS = (
    "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)


def idefics_template(bos: str) -> str:
    """`{bos}User:<image> question<end_of_utterance>\\nAssistant: answer<end_of_utterance>\\n`.

    `bos` is written literally: neither family's tokenizer adds it, so there is exactly one.
    """
    return (
        bos + "{% for message in messages %}{{ message['role'] | capitalize }}:"
        "{% if message['content'] is string %} {{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
        "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )


CHAT_TEMPLATE = idefics_template("<|begin_of_text|>")

# text hidden/layers, vision hidden/layers, image size, patch; scale_factor 2 everywhere
SIZES = {
    "tiny": dict(d=64, layers=2, vd=64, vlayers=2, image=64, patch=8),
    "base": dict(d=128, layers=2, vd=128, vlayers=2, image=64, patch=8),
    # GGUF tests: text rows 256/768 wide (multiples of 256, so K-quants really run); vision FFN 2x its width
    "gguf": dict(d=256, ffn=768, layers=2, vd=64, vlayers=2, image=64, patch=8),
    # benchmarks: SmolVLM-256M's shapes (SmolLM2-135M text body, SigLIP-B/16 at 512 px, pixel shuffle 4
    # -> 64 image tokens); ~190M parameters with the zoo's small vocabulary
    "small": dict(d=576, ffn=1536, layers=30, heads=9, kv=3, rope_theta=100000.0,
                  vd=768, vffn=3072, vlayers=12, vheads=12, image=512, patch=16, scale=4),
    # benchmark teacher: SmolVLM-500M's shapes (SmolLM2-360M text body, the same SigLIP-B/16 tower)
    "medium": dict(d=960, ffn=2560, layers=32, heads=15, kv=5, rope_theta=100000.0,
                   vd=768, vffn=3072, vlayers=12, vheads=12, image=512, patch=16, scale=4),
}
SPLIT_TILES = 4  # real SmolVLM/Idefics3 processors: longest_edge = 4 x max_image_size
# the same shapes with image splitting on, as real checkpoints ship (17 x 16 / 17 x 64 image tokens)
SIZES.update({f"{name}-split": {**SIZES[name], "split": SPLIT_TILES} for name in ("tiny", "small")})
SCALE_FACTOR = 2  # pixel-shuffle factor unless a size sets "scale"


@dataclass(frozen=True)
class IdeficsClasses:
    """The transformers classes one Idefics-style family builds with."""

    config: type
    model: type
    image_processor: type
    processor: type
    video_processor: type | None = None  # SmolVLM's processor requires one


def image_seq_len(size: str) -> int:
    """`<image>` tokens per image: (image/patch)^2 / scale_factor^2."""
    s = SIZES[size]
    return (s["image"] // s["patch"]) ** 2 // s.get("scale", SCALE_FACTOR) ** 2


def _rope(s: dict) -> dict:
    """Text RoPE settings for a size that pins rope_theta (SmolLM2 uses 100000), else the default."""
    return {"rope_parameters": {"rope_type": "default", "rope_theta": s["rope_theta"]}} if "rope_theta" in s else {}


def build_idefics_style(size: str, tokenizer, classes: IdeficsClasses):
    """(model, processor) for an Idefics3-architecture family; image splitting on for "-split" sizes.

    Split sizes also give "\\n\\n" a token of its own, as real SmolVLM/Idefics3 vocabularies have: the
    processor writes it between the last tile row and the global image, and llama.cpp's libmtmd
    looks it up as one token (without it the two runtimes lay the prompt out differently).
    """
    s = SIZES[size]
    if "split" in s and len(tokenizer.tokenize("\n\n")) != 1:
        tokenizer.add_tokens(["\n\n"])
    config = classes.config(
        vision_config=dict(
            hidden_size=s["vd"], intermediate_size=s.get("vffn", 2 * s["vd"]), num_hidden_layers=s["vlayers"],
            num_attention_heads=s.get("vheads", 4), image_size=s["image"], patch_size=s["patch"],
        ),
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=s["d"],
            intermediate_size=s.get("ffn", 2 * s["d"]),
            num_hidden_layers=s["layers"], num_attention_heads=s.get("heads", 4),
            num_key_value_heads=s.get("kv", 2),
            **_rope(s),
            max_position_embeddings=8192 if s.get("split") else 1024, rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=s.get("scale", SCALE_FACTOR),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = classes.model(config)
    # splitting off: longest_edge == max_image_size, every image is squashed to image x image;
    # on: the longest edge goes to split x image and the image is cut into image x image tiles
    edge = {"longest_edge": s["image"]}
    resize = {"longest_edge": s["image"] * s.get("split", 1)}
    image_processor = classes.image_processor(size=resize, max_image_size=edge, do_image_splitting="split" in s)
    extra = {}
    if classes.video_processor is not None:
        extra["video_processor"] = classes.video_processor(size=edge, max_image_size=edge)
    processor = classes.processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len(size), **extra,
    )
    return model, processor


_CLASSES = IdeficsClasses(
    config=Idefics3Config, model=Idefics3ForConditionalGeneration,
    image_processor=Idefics3ImageProcessor, processor=Idefics3Processor,
)


def build_tiny(size: str, tokenizer, seed: int):
    return build_idefics_style(size, tokenizer, _CLASSES)


FAMILY = Family(
    name="idefics3",
    model_class="Idefics3ForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="bpe", vocab_size=480, special_tokens=IMAGE_SPECIALS,
        bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<|pad|>",
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(SIZES),
    image_token="<image>",
    notes="Llama body at model.model.text_model; image splitting off in the zoo except -split sizes.",
)
