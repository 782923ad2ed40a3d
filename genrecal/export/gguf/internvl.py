"""InternVL (HF layout) to GGUF through llama.cpp's own converter, via a staged copy it can read.

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
import tempfile
from pathlib import Path

from genrecal.export.gguf import converter
from genrecal.export.gguf.layout import GgufExportError
from genrecal.gguf_pair.prompt import PromptFormat

TEXT_ARCH = "qwen2"
PROJECTOR_TYPE = "internvl"
IMAGE_PLACEHOLDER = "<IMG_CONTEXT>"
CONVERTER = True
MMPROJ_PRECISION = "f16"
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


def write_text(path: Path, hf_dir: Path, precision: str) -> dict:
    """model.gguf (llama.cpp `qwen2`) by the converter from a staged copy; the manifest's tokenizer facts."""
    from genrecal.export.gguf.qwen2_5_vl import text_facts

    with tempfile.TemporaryDirectory(prefix="genrecal-internvl-") as tmp:
        converter.convert(stage(Path(hf_dir), Path(tmp) / "staged"), path, precision)
    return text_facts(path)


def write_mmproj(path: Path, hf_dir: Path) -> dict:
    """mmproj.gguf (projector `internvl`) at F16 by the converter from a staged copy."""
    from genrecal.export.gguf.qwen2_5_vl import mmproj_facts

    with tempfile.TemporaryDirectory(prefix="genrecal-internvl-") as tmp:
        converter.convert(stage(Path(hf_dir), Path(tmp) / "staged"), path, MMPROJ_PRECISION, mmproj=True)
    return mmproj_facts(path)


def prompt_format(image_processor) -> PromptFormat:
    """GotOcr2 without tiling: one tile, resized straight to the processor's size."""
    size = image_processor.size
    rule = {"mode": "resize", "width": size["width"], "height": size["height"],
            "resample": int(image_processor.resample)}
    return PromptFormat(placeholder=IMAGE_PLACEHOLDER, image_rule=rule)


def notes(model, tokenizer) -> list[str]:
    return ["text + mmproj by llama.cpp's converter from a staged copy (InternVisionModel / Qwen2ForCausalLM)"]
