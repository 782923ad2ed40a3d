"""Writing tensors into a GGUF file at a chosen precision (the tensor maps themselves are the families':
genrecal.families.gguf_parts holds the pieces they share). Shapes: numpy arrays are row-major [out, in]; GGUFWriter stores them
reversed (ggml's ne = [in, out]), so "row length" below is the last numpy axis.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import gguf
import numpy as np

from genrecal.export.gguf.layout import GgufExportError

Q = gguf.GGMLQuantizationType
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}
_WEIGHT_TYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}


class TensorWriter:
    """One GGUF file: metadata through `.gguf` (a GGUFWriter), tensors through `add` at `precision`.

    Policy (as llama.cpp's own converter): 1-D tensors (norms, biases) and names in `keep_f32` stay
    F32; other weights take the precision's type. A Q8_0 row must be a multiple of 32 elements; a
    weight that is not falls back to F16 and is listed in `fallbacks`.
    """

    def __init__(self, path: Path, arch: str, precision: str, keep_f32: Iterable[str] = ()):
        if precision not in _WEIGHT_TYPES:
            raise GgufExportError(f"cannot write precision {precision!r} directly; use one of {sorted(_WEIGHT_TYPES)}")
        self.path = Path(path)
        self.precision = precision
        self.keep_f32 = set(keep_f32)
        self.gguf = gguf.GGUFWriter(str(path), arch)
        self.gguf.add_file_type(int(FILE_TYPES[precision]))
        self.types: Counter[str] = Counter()
        self.fallbacks: list[str] = []
        self.names: list[str] = []

    def add(self, name: str, array) -> None:
        arr = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
        qtype = self._type_for(name, arr)
        if qtype == Q.F32:
            self.gguf.add_tensor(name, arr)
        elif qtype == Q.F16:
            self.gguf.add_tensor(name, arr.astype(np.float16))
        else:
            self.gguf.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        self.types[qtype.name] += 1
        self.names.append(name)

    def _type_for(self, name: str, arr: np.ndarray) -> Q:
        if arr.ndim < 2 or name in self.keep_f32:
            return Q.F32
        qtype = _WEIGHT_TYPES[self.precision]
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if arr.shape[-1] % block:
            self.fallbacks.append(f"{name} (row {arr.shape[-1]} not a multiple of {block}: F16)")
            return Q.F16
        return qtype

    def finish(self) -> None:
        """Header, metadata, tensor infos and data, in GGUFWriter's required order; closes the file."""
        w = self.gguf
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
