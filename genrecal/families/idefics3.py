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

ONNX: ONNX vision graph for Idefics3 and SmolVLM (SigLIP-style ViT -> pixel shuffle -> projector).

The processor pads every sample to the same image count with all-zero images; HF drops them
before the tower. That filtering is data-dependent, so it happens here in `vision_feeds` (outside
the graph) and the graph sees only real images, in the processor's own rank and dtypes (as
transformers.js feeds them): pixel_values [1, n, 3, H, W] float32 and pixel_attention_mask
[1, n, H, W] bool. The batch axis is fixed at 1 (one prompt per call; the exporter specialises
size-1 axes). TorchScript produced an invalid graph for this tower (a float index into Gather),
dynamo a correct one.

GGUF: Idefics3 and SmolVLM -> GGUF: text arch `llama` + mmproj `idefics3` (SigLIP tower, pixel shuffle,
one linear projection `mm.model.fc`).

Text: llama.cpp's `llama` arch rotates interleaved pairs, HF rotates halves, so q/k rows are permuted
(see writer.rope_permute). Vision: SigLIP's LayerNorm/attention/MLP map one-to-one; the vision MLP
is tanh-GELU (`clip.use_gelu`). With HF image splitting off (the zoo's setting) llama.cpp encodes one
overview image of image_size x image_size; with it on, `clip.vision.preproc_image_size` makes
llama.cpp tile like HF (written, but only the non-split path is covered by tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from gguf.constants import MODEL_TENSOR, VisionProjectorType
from torch import nn

from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
)

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import PromptFormat
from genrecal.families import register
from genrecal.families.base import ClientFacts, Family, TokenizerSpec
from genrecal.families.gguf_parts import GgufRoute, GgufTensorMap, VisionSpec, add_decoder_keys, decoder_tensors, tensor_name, to_numpy
from genrecal.families.onnx_parts import OnnxSpec

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
# the same shapes with image splitting on, as real checkpoints ship (17 x 16 / 17 x 16 / 17 x 64 image tokens;
# "gguf-split": the GGUF client matrix, where llama.cpp's own clients tile like HF)
SIZES.update({f"{name}-split": {**SIZES[name], "split": SPLIT_TILES} for name in ("tiny", "gguf", "small")})
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


# ---- ONNX ----
class IdeficsVision(nn.Module):
    """pixel_values [1, n, 3, H, W], pixel_attention_mask [1, n, H, W] bool -> image_features [n * seq, D_text]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision = model.model.vision_model
        self.connector = model.model.connector
        self.patch = model.config.vision_config.patch_size

    def forward(self, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.flatten(0, 1)  # [n, 3, H, W]
        n, _, height, width = pixel_values.shape
        p = self.patch
        pixel_attention_mask = pixel_attention_mask.flatten(0, 1).long()  # [n, H, W]
        # a patch takes part if any of its pixels is real (HF does the same with two unfolds)
        cells = pixel_attention_mask.reshape(n, height // p, p, width // p, p)
        patch_mask = cells.sum(dim=(2, 4)) > 0  # [n, H/p, W/p]
        hidden = self.vision(pixel_values=pixel_values, patch_attention_mask=patch_mask).last_hidden_state
        feats = self.connector(hidden)  # [n, seq, D_text]
        return feats.reshape(-1, feats.shape[-1])


_AXES = {"pixel_values": {1: "num_images"}, "pixel_attention_mask": {1: "num_images"}}


ONNX = OnnxSpec(
    vision_inputs=("pixel_values", "pixel_attention_mask"), vision_axes=_AXES, wrap_vision=IdeficsVision,
    vision_feeds="real_images", exporter="dynamo",
    notes="padding images dropped outside the graph (vision feed rule real_images)",
)
# the builder's decoder is auto's choice here: transformers.js ran it (smolvlm, idefics3)
CLIENTS = ClientFacts(onnx_decoder_auto="builder")


# ---- GGUF (genrecal's writer) ----
GGUF_IMAGE_PLACEHOLDER = "<image>"  # the chat template's image part; libmtmd adds the fake/global tokens
# what llama.cpp's libmtmd looks up by text, one vocabulary token each, around Idefics3 images (tools/mtmd/mtmd.cpp,
# PROJECTOR_TYPE_IDEFICS3: "\n\n" + fake + global-img before the overview, fake after it, "\n" ending a tile row);
# the tile tags <row_r_col_c> are tokenised as text. A missing one becomes token -1 (llama.cpp #27190)
LIBMTMD_LOOKUPS = ("\n\n", "<fake_token_around_image>", "<global-img>", "\n")
LIBMTMD_WHOLE_TOKENS = ("\n\n",)  # the one an ordinary token in real vocabularies; the zoo adds it (zoo.add_whole_tokens)
_LAYER = {  # HF suffix inside vision_model.encoder.layers.{i} -> gguf tensor
    "layer_norm1": MODEL_TENSOR.V_ENC_INPUT_NORM,
    "layer_norm2": MODEL_TENSOR.V_ENC_POST_ATTN_NORM,
    "self_attn.q_proj": MODEL_TENSOR.V_ENC_ATTN_Q,
    "self_attn.k_proj": MODEL_TENSOR.V_ENC_ATTN_K,
    "self_attn.v_proj": MODEL_TENSOR.V_ENC_ATTN_V,
    "self_attn.out_proj": MODEL_TENSOR.V_ENC_ATTN_O,
    "mlp.fc1": MODEL_TENSOR.V_ENC_FFN_UP,
    "mlp.fc2": MODEL_TENSOR.V_ENC_FFN_DOWN,
}
_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def gguf_text_keys(w, model, n_vocab: int) -> None:
    add_decoder_keys(w, model.config.get_text_config(), n_vocab)


def gguf_text_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    return decoder_tensors(model, permute_qk=True)


def gguf_vision_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    vision = model.model.vision_model
    emb = vision.embeddings
    yield "v.patch_embd.weight", to_numpy(emb.patch_embedding.weight)  # [embed, 3, p, p]
    yield "v.patch_embd.bias", to_numpy(emb.patch_embedding.bias)
    yield "v.position_embd.weight", to_numpy(emb.position_embedding.weight)  # [n_patches, embed]
    for name, param in vision.encoder.layers.named_parameters():
        bid, rest = name.split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module not in _LAYER:
            raise GgufExportError(f"vision tensor encoder.layers.{name} has no llama.cpp counterpart")
        yield tensor_name(_LAYER[module], kind, bid), to_numpy(param)
    yield "v.post_ln.weight", to_numpy(vision.post_layernorm.weight)
    yield "v.post_ln.bias", to_numpy(vision.post_layernorm.bias)
    proj = model.model.connector.modality_projection.proj
    if getattr(proj, "bias", None) is not None:
        raise GgufExportError("Idefics3 connector with a bias: llama.cpp's idefics3 projector has none")
    yield "mm.model.fc.weight", to_numpy(proj.weight)  # [text hidden, embed * scale^2]


def gguf_vision_spec(model, image_processor) -> VisionSpec:
    vcfg = model.config.vision_config
    if vcfg.hidden_act not in _TANH_GELU:
        raise GgufExportError(f"Idefics3 vision hidden_act {vcfg.hidden_act!r}: llama.cpp runs tanh-GELU here")
    splitting = bool(getattr(image_processor, "do_image_splitting", False))
    return VisionSpec(
        projector_type=VisionProjectorType.IDEFICS3,
        embedding_length=vcfg.hidden_size,
        feed_forward_length=vcfg.intermediate_size,
        block_count=vcfg.num_hidden_layers,
        head_count=vcfg.num_attention_heads,
        layer_norm_eps=float(vcfg.layer_norm_eps),
        image_size=vcfg.image_size,
        patch_size=vcfg.patch_size,
        projection_dim=model.config.get_text_config().hidden_size,
        image_mean=tuple(image_processor.image_mean),
        image_std=tuple(image_processor.image_std),
        use_gelu=True,
        scale_factor=model.config.scale_factor,
        preproc_image_size=image_processor.size["longest_edge"] if splitting else None,
    )


def gguf_prompt_format(image_processor) -> PromptFormat:
    """Splitting off: HF resizes the longest edge to size["longest_edge"], squashes the result to
    max_image_size square and writes
    `<fake_token_around_image><global-img>` + image tokens + `<fake_token_around_image>`. libmtmd's
    Idefics3 path would add a tile (and a "\\n\\n" token) even for an image that needs none, so the
    layout is genrecal's. Splitting on: libmtmd tiles like HF (not covered by tests)."""
    if getattr(image_processor, "do_image_splitting", False):
        return PromptFormat(placeholder=GGUF_IMAGE_PLACEHOLDER)
    rule = {"mode": "square", "longest_edge": image_processor.size["longest_edge"],
            "size": image_processor.max_image_size["longest_edge"], "resample": int(image_processor.resample)}
    layout = {"mode": "overview", "before": "<fake_token_around_image><global-img>",
              "after": "<fake_token_around_image>"}
    return PromptFormat(placeholder=GGUF_IMAGE_PLACEHOLDER, image_rule=rule, image_layout=layout)


GGUF = GgufRoute(
    text_arch="llama", projector_type=VisionProjectorType.IDEFICS3, image_placeholder=GGUF_IMAGE_PLACEHOLDER,
    prompt_format=gguf_prompt_format, libmtmd_lookups=LIBMTMD_LOOKUPS,
    tensors=GgufTensorMap(add_text_keys=gguf_text_keys, text_tensors=gguf_text_tensors,
                          vision_spec=gguf_vision_spec, vision_tensors=gguf_vision_tensors),
)


FAMILY = register(Family(
    name="idefics3",
    model_class="Idefics3ForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="bpe", vocab_size=480, special_tokens=IMAGE_SPECIALS,
        bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<|pad|>",
        whole_tokens=LIBMTMD_WHOLE_TOKENS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(SIZES),
    image_token="<image>",
    notes="Llama body at model.model.text_model; image splitting off in the zoo except -split sizes.",
    onnx=ONNX,
    gguf=GGUF,
    clients=CLIENTS,
    edgellm_note="Edge-LLM 0.11 has no Idefics3 vision encoder (its exporter writes llm/ only)",
))
