"""LLaVA (CLIP tower + MLP projector + Llama body) to GGUF through llama.cpp's own tools.

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
import os
import shutil
import tempfile
from pathlib import Path

from genrecal.export.gguf import converter
from genrecal.export.gguf.layout import GgufExportError
from genrecal.gguf_pair.prompt import PromptFormat

TEXT_ARCH = "llama"
PROJECTOR_TYPE = "mlp"
IMAGE_PLACEHOLDER = "<image>"
CONVERTER = True  # export.py: text and mmproj come from llama.cpp's tools
MMPROJ_PRECISION = "f16"
LEGACY = Path("tools") / "mtmd" / "legacy-models"
SURGERY, ENCODER = LEGACY / "llava_surgery_v2.py", LEGACY / "convert_image_encoder_to_gguf.py"
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


def stage(hf_dir: Path, out: Path) -> tuple[Path, Path]:
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


def write_text(path: Path, hf_dir: Path, precision: str) -> dict:
    """model.gguf (llama.cpp `llama`) by convert_hf_to_gguf.py; the manifest's tokenizer facts."""
    from genrecal.export.gguf.qwen2_5_vl import fallback_pre, text_facts

    try:
        pre = fallback_pre(hf_dir)
    except GgufExportError:  # no BPE pre-tokenizer (LLaVA-1.5's Llama-2 SentencePiece vocabulary): none needed
        pre = None
    converter.convert(hf_dir, path, precision, pre=pre)
    return text_facts(path)


def write_mmproj(path: Path, hf_dir: Path) -> dict:
    """mmproj.gguf (projector `mlp`, F16 weights) by llama.cpp's legacy LLaVA surgery + encoder scripts."""
    from genrecal.export.gguf.qwen2_5_vl import mmproj_facts

    hf_dir, src = Path(hf_dir), converter.llama_cpp_source()
    image = json.loads((hf_dir / "processor_config.json").read_text()).get("image_processor", {}) \
        if (hf_dir / "processor_config.json").is_file() else {}
    mean, std = image.get("image_mean"), image.get("image_std")
    if not (mean and std):
        raise GgufExportError(f"{hf_dir}: no image_mean/image_std in processor_config.json")
    gguf_py = str(src / "gguf-py")
    with tempfile.TemporaryDirectory(prefix="genrecal-llava-") as tmp:
        checkpoint, vision = stage(hf_dir, Path(tmp))
        converter.run_script([str(src / SURGERY), "-C", "-m", str(checkpoint)], "llama.cpp's llava_surgery_v2.py",
                             hf_dir, pythonpath=gguf_py)
        os.replace(checkpoint / "llava.clip", vision / "pytorch_model.bin")
        out = Path(tmp) / "out"
        runner = str(Path(__file__).with_name("llava_legacy_run.py"))  # transformers 5's CLIPVisionModel
        converter.run_script([runner, str(src / ENCODER), "--", "-m", str(vision), "--llava-projector",
                              str(checkpoint / "llava.projector"), "--output-dir", str(out), "--clip-model-is-vision",
                              "--image-mean", *map(str, mean), "--image-std", *map(str, std)],
                             "llama.cpp's convert_image_encoder_to_gguf.py", hf_dir, pythonpath=gguf_py)
        shutil.move(str(out / "mmproj-model-f16.gguf"), path)
    return mmproj_facts(path)


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


def prompt_format(image_processor) -> PromptFormat:
    """CLIPImageProcessor: shortest edge to size, then a centre crop (replayed by the runtime, so
    llama.cpp gets the crop at its own image size and neither pads nor resizes)."""
    crop = image_processor.crop_size if image_processor.do_center_crop else None
    rule = {"mode": "crop", "shortest_edge": image_processor.size["shortest_edge"],
            "width": (crop or {}).get("width"), "height": (crop or {}).get("height"),
            "resample": int(image_processor.resample)}
    return PromptFormat(placeholder=IMAGE_PLACEHOLDER, image_rule=rule)


def notes(model, tokenizer) -> list[str]:
    layer = model.config.vision_feature_layer
    return [f"text by llama.cpp's convert_hf_to_gguf.py; mmproj by its legacy llava_surgery_v2.py + "
            f"convert_image_encoder_to_gguf.py (vision_feature_layer {layer} -> clip.vision.feature_layer)",
            f"{RUNTIME_GRAPH}: image embeddings differ from the HF model's (parity.reference_original); "
            "the conversion is checked against PyTorch computing that graph (parity.reference)"]
