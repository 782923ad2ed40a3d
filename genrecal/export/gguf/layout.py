"""What the GGUF exporter produces and for which families: precisions, supported families, errors.

The artifact's file names and manifest keys are shared with the runtime and live in
genrecal.artifacts.gguf_pair.layout; they are re-exported here so export code reads one `layout`.
Importing this module loads neither torch nor transformers (supported_families() reads the family registry).
"""
from __future__ import annotations

from genrecal.artifacts.gguf_pair.layout import (  # noqa: F401 - re-exported for the export code
    EXTRA_PROJECTOR,
    EXTRA_PROMPT,
    EXTRA_QUANT,
    EXTRA_TEXT_ARCH,
    MMPROJ_FILE,
    MODEL_FILE,
    GgufExportError,
    GgufPairError,
    GgufValidationError,
)

# precision name -> how it is produced
QUANTS = {
    "f32": "written directly (gguf-py)",
    "f16": "written directly (gguf-py); 1-D tensors stay F32",
    "q8_0": "written directly (gguf.quants.quantize); 1-D tensors stay F32",
    "q4_k_m": "llama.cpp's llama_model_quantize from an F32 intermediate",
}
# what llama.cpp's Q4_K_M mix may legitimately produce for a 2-D weight; anything else is a fallback
KQUANT_TYPES = {"q4_k_m": ("Q4_K", "Q6_K")}
# 2-D weights llama.cpp's quantizer keeps float in every mix (llama-quant.cpp: the Gated DeltaNet / Mamba conv
# kernels, rows of kernel width): not fallbacks
NEVER_QUANTIZED = ("ssm_conv1d.weight",)

# families llama.cpp itself cannot run (no mmproj projector / text arch for them)
NOT_IN_LLAMA_CPP = ("llava_onevision", "paligemma")


def supported_families() -> list[str]:
    """Families whose record declares a GGUF route (genrecal.families.*.GGUF)."""
    from genrecal.families import with_format

    return with_format("gguf")


def unsupported_family_message(model_type: str) -> str:
    why = ("llama.cpp has no support for it" if model_type in NOT_IN_LLAMA_CPP
           else "genrecal has no GGUF writer for it")
    return (f"GGUF export does not support family {model_type!r} ({why}); "
            f"supported families: {', '.join(supported_families())}")
