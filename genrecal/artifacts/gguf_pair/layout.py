"""What a GGUF artifact dir holds, defined once for the exporter that writes it and the runtime
that reads it: file names, manifest `extra` keys, and the errors of a pair.

    out/
      model.gguf              text model + tokenizer + chat template (llama.cpp's LLM loader)
      mmproj.gguf             vision tower + projector, arch "clip" (llama.cpp's libmtmd)
      genrecal_manifest.json  format "gguf": checksums, parity results, and `extra` (keys below)

Imports neither torch nor transformers, nor anything of genrecal's export code.
"""
from __future__ import annotations

from genrecal.errors import GenrecalError

MODEL_FILE = "model.gguf"
MMPROJ_FILE = "mmproj.gguf"

# keys of Manifest.extra written by export and read by the runtime
EXTRA_TEXT_ARCH = "text_arch"  # general.architecture of model.gguf, e.g. "qwen2vl", "llama"
EXTRA_PROJECTOR = "projector_type"  # clip.projector_type of mmproj.gguf, e.g. "qwen2vl_merger"
EXTRA_PROMPT = "prompt_format"  # genrecal.artifacts.gguf_pair.prompt.PromptFormat: placeholder, image size, layout
EXTRA_QUANT = "quantization"  # requested precision, tensor-type counts, fallbacks


class GgufPairError(GenrecalError):
    """A model.gguf + mmproj.gguf pair that cannot be written, read or run as it is."""


class GgufValidationError(GgufPairError):
    """A GGUF file missing a key or tensor llama.cpp needs (loading it would abort or segfault)."""


class GgufExportError(GgufPairError):
    """A model that cannot be written as a GGUF pair, or a pair that failed its checks."""
