"""InternVL (InternVLForConditionalGeneration): InternViT -> pixel-shuffle MLP projector -> Qwen2
body (``model.model.language_model``).

Image-token scheme: the chat template writes one `<IMG_CONTEXT>`; the processor expands it to
`<img>` + `<IMG_CONTEXT>` * image_seq_length * tiles + `</img>`, with
image_seq_length = (image/patch)^2 * downsample_ratio^2. The zoo turns tiling (crop_to_patches)
off, so every image is one tile. The processor finds these tokens through tokenizer attributes
(start_image_token, end_image_token, context_image_token, video_token), which the zoo's tokenizer
carries as `extra_special_tokens`.

ONNX: InternVLVision wraps get_image_features (one tile per image; tiles are just more rows).

GGUF: InternVL (HF layout) to GGUF through llama.cpp's own converter, via a staged copy it can read.

llama.cpp's converter knows InternVL's vision tower as `InternVisionModel` (OpenGVLab's layout, and
Intern-S1's HF-style `model.vision_tower.*` / `model.multi_modal_projector.*` tensor names), not
`InternVLForConditionalGeneration`. `stage()` writes a dir it reads: config.json with
`vision_config.architectures = ["InternVisionModel"]` and `text_config.architectures =
["Qwen2ForCausalLM"]`, and the weights under the names transformers itself loads them as
(`model.vision_tower.`, `model.multi_modal_projector.`, `model.language_model.`, `lm_head.`).
Text model: llama.cpp's `qwen2`; mmproj: projector `internvl` (libmtmd writes <img> ... </img> itself).
The converter maps the projector's mlp1.{0,1,3} through its vision block table: >= 4 vision blocks.
Its BPE pre-tokenizer check needs a real tokenizer (zoo: `vocab_gguf=` llama.cpp's ggml-vocab-qwen2).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from transformers import (
    GotOcr2ImageProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVideoProcessor,
)

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import PromptFormat
from genrecal.families import register
from genrecal.families.base import Family, TokenizerSpec
from genrecal.families.gguf_parts import ConverterRoute, GgufRoute
from genrecal.families.onnx_parts import OnnxSpec

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


# ---- ONNX ----
class InternVLVision(nn.Module):
    """pixel_values [n_tiles, 3, H, W] -> image_features [n_tiles * tokens, D_text]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feats = self.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
        return feats.reshape(-1, feats.shape[-1])


ONNX = OnnxSpec(
    vision_inputs=("pixel_values",), vision_axes={"pixel_values": {0: "num_images"}}, wrap_vision=InternVLVision,
    notes="one tile per image (crop_to_patches off in the zoo); tiles are just more rows",
)


# ---- GGUF (llama.cpp's converter, from a staged copy) ----
MIN_VISION_BLOCKS = 4
_RENAME = (("vision_tower.", "model.vision_tower."), ("multi_modal_projector.", "model.multi_modal_projector."),
           ("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."))


def _renamed(name: str) -> str:
    for old, new in _RENAME:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def stage(hf_dir: Path, out: Path) -> Path:
    """A copy of hf_dir that llama.cpp's converter reads (see module doc); side files are symlinked."""
    from safetensors.torch import load_file, save_file

    config = json.loads((hf_dir / "config.json").read_text())
    if (blocks := config["vision_config"].get("num_hidden_layers", 0)) < MIN_VISION_BLOCKS:
        raise GgufExportError(f"{hf_dir}: an InternVL vision tower with {blocks} blocks; llama.cpp's converter "
                              f"needs >= {MIN_VISION_BLOCKS} (it maps mlp1.3 through its block table)")
    config["vision_config"]["architectures"] = ["InternVisionModel"]
    config["text_config"]["architectures"] = ["Qwen2ForCausalLM"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for path in hf_dir.iterdir():
        if path.suffix != ".safetensors" and path.name not in ("config.json", "model.safetensors.index.json"):
            os.symlink(path.resolve(), out / path.name)
    tensors = {}
    for path in sorted(hf_dir.glob("*.safetensors")):
        tensors.update({_renamed(k): v.contiguous() for k, v in load_file(str(path)).items()})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def gguf_prompt_format(image_processor) -> PromptFormat:
    """GotOcr2 without tiling: one tile, resized straight to the processor's size."""
    size = image_processor.size
    rule = {"mode": "resize", "width": size["width"], "height": size["height"],
            "resample": int(image_processor.resample)}
    return PromptFormat(placeholder="<IMG_CONTEXT>", image_rule=rule)


def gguf_notes(model, tokenizer) -> list[str]:
    return ["text + mmproj by llama.cpp's converter from a staged copy (InternVisionModel / Qwen2ForCausalLM)"]


GGUF = GgufRoute(
    text_arch="qwen2", projector_type="internvl", image_placeholder="<IMG_CONTEXT>",
    prompt_format=gguf_prompt_format, notes=gguf_notes,
    converter=ConverterRoute(stage=stage, pre_tokenizer="none"), zoo_size="tiny-v4",
    zoo_vocab="ggml-vocab-qwen2.gguf",
)


FAMILY = register(Family(
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
    onnx=ONNX,
    gguf=GGUF,
    edgellm=True,
    edgellm_images="tiles",
))
