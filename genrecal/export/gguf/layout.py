"""What a GGUF artifact dir holds, defined once: file names, precisions, families, manifest keys.

    out/
      model.gguf              text model + tokenizer + chat template (llama.cpp's LLM loader)
      mmproj.gguf             vision tower + projector, arch "clip" (llama.cpp's libmtmd), F16
      genrecal_manifest.json  format "gguf": checksums, parity results, and `extra` (keys below)

This module imports neither torch nor transformers, so the llama.cpp runtime can use it on a device.
"""
from __future__ import annotations

from genrecal.errors import GenrecalError

MODEL_FILE = "model.gguf"
MMPROJ_FILE = "mmproj.gguf"

# precision name -> how it is produced
QUANTS = {
    "f32": "written directly (gguf-py)",
    "f16": "written directly (gguf-py); 1-D tensors stay F32",
    "q8_0": "written directly (gguf.quants.quantize); 1-D tensors stay F32",
    "q4_k_m": "llama.cpp's llama_model_quantize from an F32 intermediate",
}
# what llama.cpp's Q4_K_M mix may legitimately produce for a 2-D weight; anything else is a fallback
KQUANT_TYPES = {"q4_k_m": ("Q4_K", "Q6_K")}

# transformers model_type -> the GGUF family writer module (genrecal.export.gguf.<module>)
FAMILY_WRITERS = {"qwen2_vl": "qwen2_vl", "idefics3": "idefics3", "smolvlm": "idefics3"}
# families llama.cpp itself cannot run (no mmproj projector / text arch for them)
NOT_IN_LLAMA_CPP = ("llava_onevision", "paligemma")

# keys of Manifest.extra written by export and read by the runtime
EXTRA_TEXT_ARCH = "text_arch"  # general.architecture of model.gguf, e.g. "qwen2vl", "llama"
EXTRA_PROJECTOR = "projector_type"  # clip.projector_type of mmproj.gguf, e.g. "qwen2vl_merger"
EXTRA_PROMPT = "prompt_format"  # genrecal.export.gguf.prompt.PromptFormat: placeholder, image size, layout
EXTRA_QUANT = "quantization"  # requested precision, tensor-type counts, fallbacks


class GgufExportError(GenrecalError):
    """A model that cannot be written as a GGUF pair, or a pair that failed its checks."""


class GgufValidationError(GgufExportError):
    """A GGUF file missing a key or tensor llama.cpp needs (loading it would abort or segfault)."""


def supported_families() -> list[str]:
    return sorted(FAMILY_WRITERS)


def unsupported_family_message(model_type: str) -> str:
    why = ("llama.cpp has no support for it" if model_type in NOT_IN_LLAMA_CPP
           else "genrecal has no GGUF writer for it")
    return (f"GGUF export does not support family {model_type!r} ({why}); "
            f"supported families: {', '.join(supported_families())}")
