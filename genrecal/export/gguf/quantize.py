"""K-quants through llama.cpp's own quantizer, and a check that they really happened.

`gguf.quants` (Python) writes F16/Q8_0/Q4_0/...; K-quants (Q4_K_M = Q4_K with Q6_K for the most
sensitive tensors) come only from `llama_model_quantize`. That function exits 0 even when it cannot
use a K-quant for a tensor (a row that is not a multiple of 256 elements silently becomes Q5_0 /
Q8_0), so `tensor_report` reads the types back and names every 2-D weight that fell back.
"""
from __future__ import annotations

import ctypes
from collections import Counter
from pathlib import Path

from gguf import GGUFReader

from genrecal.export.gguf.layout import KQUANT_TYPES, NEVER_QUANTIZED, GgufExportError
from genrecal.export.gguf.writer import FILE_TYPES


def llama_quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> None:
    """Quantise src (F32/F16 GGUF) to dst with llama.cpp; errors carry llama.cpp's own log lines."""
    import llama_cpp

    from genrecal.artifacts.gguf_pair.llama_log import captured_log

    if quant not in KQUANT_TYPES:
        raise GgufExportError(f"llama.cpp quantisation is used for {sorted(KQUANT_TYPES)}, not {quant!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPES[quant])
    params.nthread = int(threads or 0)  # 0: llama.cpp uses every hardware thread
    with captured_log() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not Path(dst).is_file():
        raise GgufExportError(f"llama_model_quantize({quant}) failed with code {rc}: {log.errors() or 'no log'}")


def tensor_report(path: Path, quant: str) -> dict:
    """Type counts of `path` and the 2-D weights whose type is not one `quant` should produce (apart from those
    llama.cpp never quantizes)."""
    reader = GGUFReader(str(path))
    counts: Counter[str] = Counter()
    fallbacks = []
    allowed = KQUANT_TYPES.get(quant)
    for t in reader.tensors:
        name = t.tensor_type.name
        counts[name] += 1
        if allowed and len(t.shape) >= 2 and name not in allowed and not t.name.endswith(NEVER_QUANTIZED):
            fallbacks.append(f"{t.name}: {name} (row {int(t.shape[0])})")
    report = {"requested": quant, "tensor_types": dict(counts), "fallbacks": fallbacks}
    if fallbacks:
        report["warning"] = (f"{len(fallbacks)} weight(s) are not {'/'.join(allowed or ())}: llama.cpp's K-quants "
                             "need rows that are multiples of 256 elements, else it silently uses another type")
    return report
