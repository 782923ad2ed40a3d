"""GGUF export for llama.cpp: `export_gguf(hf_dir, out_dir, quant)` -> a checked artifact dir.

    from genrecal.export.gguf import export_gguf
    manifest = export_gguf("student/", "out/student-gguf", quant="q4_k_m")   # check=True by default
    # then: genrecal.runtimes.llamacpp.LlamaCppRuntime("out/student-gguf")

Files: export.py (orchestration), qwen2_vl.py / idefics3.py (per-family tensor maps, mmproj
hyper-parameters, prompt format; idefics3.py also serves smolvlm), writer.py (precision policy, the
shared decoder map), tokenizer.py (vocab, merges, token types, chat template), mmproj.py (clip file),
quantize.py (llama.cpp K-quants + type read-back), parity.py (PyTorch vs llama.cpp), layout.py
(precisions, family writers, GgufExportError). qwen2_5_vl.py / internvl.py hand their text model and
mmproj to llama.cpp's own converter (converter.py finds it in the installed llama-cpp-python's sdist;
converter_run.py is its child-process entry); internvl.py stages a copy the converter can read; llava.py
takes its text model from the converter and its CLIP mmproj from llama.cpp's legacy LLaVA scripts
(llava_legacy_run.py runs them under transformers 5). What the runtime reads too — file names, manifest keys,
the prompt format, pair validation, llama.cpp log capture — lives in genrecal.artifacts.gguf_pair.
Importing this package loads neither torch nor llama.cpp.
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
