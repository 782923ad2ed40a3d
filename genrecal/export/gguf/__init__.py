"""GGUF export for llama.cpp: `export_gguf(hf_dir, out_dir, quant)` -> a checked artifact dir.

Files: export.py (orchestration), qwen2_vl.py / idefics3.py (per-family tensor maps and mmproj
hyper-parameters), writer.py (precision policy, decoder map), tokenizer.py, mmproj.py, quantize.py
(llama.cpp K-quants), validate.py (what llama.cpp needs, checked before loading), parity.py,
layout.py (file names and manifest keys). Importing this package loads neither torch nor llama.cpp.
"""
from __future__ import annotations

from genrecal.export.gguf.layout import (
    MMPROJ_FILE,
    MODEL_FILE,
    QUANTS,
    GgufExportError,
    GgufValidationError,
    supported_families,
)


def export_gguf(hf_dir, out_dir, quant: str = "q4_k_m", check: bool = True, **kwargs):
    """See genrecal.export.gguf.export.export_gguf (imported lazily: it pulls in torch)."""
    from genrecal.export.gguf.export import export_gguf as _export

    return _export(hf_dir, out_dir, quant, check, **kwargs)


__all__ = ["MMPROJ_FILE", "MODEL_FILE", "QUANTS", "GgufExportError", "GgufValidationError", "export_gguf",
           "supported_families"]
