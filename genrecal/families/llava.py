"""LLaVA (LlavaForConditionalGeneration): CLIP tower -> MLP projector -> Llama body.

Image-token scheme: one `<image>` placeholder expanded by the processor to (image/patch)^2 tokens
(the CLS feature is dropped by the "default" feature-select strategy).

ONNX: LlavaVision keeps the batch axis whole (one graph serves any number of images).

GGUF: LLaVA (CLIP tower + MLP projector + Llama body) to GGUF through llama.cpp's own tools.

    text:   convert_hf_to_gguf.py on the transformers dir          -> model.gguf (llama.cpp `llama`)
    mmproj: tools/mtmd/legacy-models/llava_surgery_v2.py -C         -> llava.clip + llava.projector
            tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py --clip-model-is-vision
                                                                    -> mmproj.gguf (projector `mlp`)

llama.cpp's HF converter refuses CLIP towers (`Unsupported model type: clip_vision_model`); its route
for LLaVA-1.5 is the legacy pair above, from the same sdist as the converter. `stage()` writes the
checkpoint in llava-hf's layout (`vision_tower.vision_model.*`, `multi_modal_projector.*`) with only
those tensors, which the surgery splits; the vision dir gets the CLIP vision config plus the LLaVA
config's `vision_feature_layer`, which the encoder script turns into `clip.vision.feature_layer`
(non-negative: hidden_states index) and the block count it keeps, so llama.cpp takes the same
hidden state as `get_image_features` (no post-layernorm; the "default" strategy's CLS drop is
llama.cpp's own). Image mean/std are passed from the HF processor. The script writes 2-D weights
F16 and the patch conv F16 always.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import PromptFormat
from genrecal.families import register
from genrecal.families.base import ClientFacts, Family, TokenizerSpec
from genrecal.families.gguf_parts import ConverterRoute, GgufRoute
from genrecal.families.onnx_parts import OnnxSpec

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


# ---- ONNX ----
class LlavaVision(nn.Module):
    """pixel_values [n, 3, H, W] -> image_features [n * patches, D_text].

    HF's `get_image_features` returns a Python list per image, which the tracer unrolls into a
    fixed-count Split; this wrapper keeps the batch axis whole so one graph serves any n.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        self.tower = model.model.vision_tower
        self.projector = model.model.multi_modal_projector
        layer = cfg.vision_feature_layer
        self.layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        self.drop_cls = cfg.vision_feature_select_strategy == "default"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states
        picked = [hidden[i][:, 1:] if self.drop_cls else hidden[i] for i in self.layers]
        feats = self.projector(torch.cat(picked, dim=-1))  # [n, patches, D_text]
        return feats.reshape(-1, feats.shape[-1])


ONNX = OnnxSpec(
    vision_inputs=("pixel_values",), vision_axes={"pixel_values": {0: "num_images"}}, wrap_vision=LlavaVision,
)


# ---- GGUF (llama.cpp's converter for the text, its legacy LLaVA scripts for the mmproj) ----
SELECT_STRATEGY = "default"  # llama.cpp's llava graph always drops the CLS row


def _vision_name(name: str) -> str | None:
    """llava-hf's checkpoint name for a vision/projector tensor; None for text tensors."""
    for prefix in ("model.vision_tower.", "vision_tower."):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return "vision_tower." + (rest if rest.startswith("vision_model.") else "vision_model." + rest)
    for prefix in ("model.multi_modal_projector.", "multi_modal_projector."):
        if name.startswith(prefix):
            return "multi_modal_projector." + name[len(prefix):]
    return None


def _config(hf_dir: Path) -> dict:
    config = json.loads((hf_dir / "config.json").read_text())
    strategy = config.get("vision_feature_select_strategy", SELECT_STRATEGY)
    if strategy != SELECT_STRATEGY:
        raise GgufExportError(f"{hf_dir}: vision_feature_select_strategy {strategy!r}; llama.cpp's LLaVA graph "
                              f"implements only {SELECT_STRATEGY!r} (CLS row dropped)")
    if config.get("projector_hidden_act", "gelu") != "gelu":
        raise GgufExportError(f"{hf_dir}: projector_hidden_act {config['projector_hidden_act']!r}; llama.cpp's "
                              "LLaVA projector is Linear-GELU-Linear")
    return config


def converter_check(hf_dir: Path) -> None:
    """Refuse a LLaVA that llama.cpp's LLaVA graph does not implement (before any conversion)."""
    _config(Path(hf_dir))


def mmproj_stage(hf_dir: Path, out: Path) -> tuple[Path, Path]:
    """(checkpoint dir for the surgery, vision dir for the encoder script) under `out`."""
    from safetensors.torch import load_file, save_file

    config = _config(hf_dir)
    tensors = {}
    for path in sorted(hf_dir.glob("*.safetensors")):
        tensors.update({new: v.float().contiguous() for k, v in load_file(str(path)).items()
                        if (new := _vision_name(k)) is not None})
    checkpoint, vision = out / "checkpoint", out / "vit"
    checkpoint.mkdir(parents=True)
    vision.mkdir()
    save_file(tensors, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    vision_config = dict(config["vision_config"])
    vision_config.setdefault("projection_dim", vision_config["hidden_size"])
    vision_config["vision_feature_layer"] = config.get("vision_feature_layer", -2)
    vision_config.pop("torch_dtype", None)  # the staged weights are fp32 (a bf16 checkpoint's dtype would make
    vision_config["dtype"] = "float32"     # transformers load bf16 tensors, which the script's numpy cannot take)
    (vision / "config.json").write_text(json.dumps(vision_config, indent=1))
    return checkpoint, vision


# libmtmd's LLaVA graph in llama-cpp-python 0.3.36 (tools/mtmd/models/llava.cpp) appends CLS after the
# patches but still adds position rows 0..n in order and keeps rows 1..n: patch i gets position i, not
# i+1, patch 0's output is dropped and the projected CLS output becomes the last image token
# (ggml-org/llama.cpp#25814; fix proposed in #25844, not merged). No tensor layout can undo the row
# selection, so parity is checked against `runtime_model` (PyTorch computing that graph) and the
# deviation from the HF model is measured beside it (manifest parity.reference_original).
RUNTIME_GRAPH = ("libmtmd llava graph: CLS appended after the patches, position rows 0..n, rows 1..n kept "
                 "(ggml-org/llama.cpp#25814)")


def runtime_model(model):
    """A copy of `model` whose CLIP embeddings lay tokens out as libmtmd does: [patch_0 .. patch_{n-1},
    CLS] + position rows 0..n; the "default" strategy then keeps rows 1..n, as llama.cpp does."""
    import copy
    import types

    import torch

    def cls_last(self, pixel_values, interpolate_pos_encoding=False):
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # [b, d, gh, gw]
        patches = patches.flatten(2).transpose(1, 2)  # [b, n, d]
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([patches, cls], dim=1) + self.position_embedding(self.position_ids)  # [b, n + 1, d]

    clone = copy.deepcopy(model)
    embeddings = clone.model.vision_tower.embeddings
    embeddings.forward = types.MethodType(cls_last, embeddings)
    return clone


def gguf_prompt_format(image_processor) -> PromptFormat:
    """CLIPImageProcessor: shortest edge to size, then a centre crop (replayed by the runtime, so
    llama.cpp gets the crop at its own image size and neither pads nor resizes)."""
    crop = image_processor.crop_size if image_processor.do_center_crop else None
    rule = {"mode": "crop", "shortest_edge": image_processor.size["shortest_edge"],
            "width": (crop or {}).get("width"), "height": (crop or {}).get("height"),
            "resample": int(image_processor.resample)}
    return PromptFormat(placeholder="<image>", image_rule=rule)


def gguf_notes(model, tokenizer) -> list[str]:
    layer = model.config.vision_feature_layer
    return [f"text by llama.cpp's convert_hf_to_gguf.py; mmproj by its legacy llava_surgery_v2.py + "
            f"convert_image_encoder_to_gguf.py (vision_feature_layer {layer} -> clip.vision.feature_layer)",
            f"{RUNTIME_GRAPH}: image embeddings differ from the HF model's (parity.reference_original); "
            "the conversion is checked against PyTorch computing that graph (parity.reference)"]


GGUF = GgufRoute(
    text_arch="llama", projector_type="mlp", image_placeholder="<image>",
    prompt_format=gguf_prompt_format, notes=gguf_notes, runtime_model=runtime_model, runtime_graph=RUNTIME_GRAPH,
    converter=ConverterRoute(check=converter_check, pre_tokenizer="optional",
                             mmproj="llava_legacy", mmproj_stage=mmproj_stage),
    zoo_vocab="ggml-vocab-gpt-2.gguf",  # the converter needs a real BPE tokenizer
)


FAMILY = register(Family(
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
    onnx=ONNX,
    gguf=GGUF,
    clients=ClientFacts(onnx_decoder_auto_why=(
        "llava's text model is llama too; --onnx-decoder builder takes it (genrecal's runtime checks parity), but "
        "transformers.js was not run on it, so auto keeps genrecal's decoder")),
    edgellm_note="Edge-LLM 0.11 has no LLaVA vision encoder (its exporter writes llm/ only)",
))
