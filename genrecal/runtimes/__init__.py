"""Runtimes: one small API over torch, onnxruntime, llama.cpp and TensorRT.

    from genrecal import runtimes
    rt = runtimes.load("out/export/onnx-int8", threads=4)   # backend picked from the manifest
    gen = rt.generate([image], "What colour is the shape?", max_new_tokens=8)

`load` opens an HF model dir (torch), or an export dir by its manifest's format: hf -> torch,
onnx -> onnxruntime, gguf -> llamacpp, tensorrt -> tensorrt. Backends are imported only when
used, so a device carries only the libraries of the backend it runs. The manifest's checksums are
verified before anything is loaded.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

from genrecal.artifacts.manifest import MANIFEST_NAME, Manifest, ManifestError, load_manifest
from genrecal.runtimes.base import Generation, Runtime, RuntimeError_, Stream, Timing

# runtime name -> (module, class, the pip extra that brings its library)
BACKENDS = {
    "torch": ("genrecal.runtimes.torch_runtime", "TorchRuntime", "genrecal"),
    "onnxruntime": ("genrecal.runtimes.onnxruntime", "OnnxRuntime", "genrecal[onnx]"),
    "llamacpp": ("genrecal.runtimes.llamacpp", "LlamaCppRuntime", "genrecal[gguf]"),
    "tensorrt": ("genrecal.runtimes.tensorrt", "TensorRTRuntime", "tensorrt from JetPack"),
}
# manifest format -> the runtimes that can run it (first = default)
FORMAT_RUNTIMES = {
    "hf": ("torch",),
    "onnx": ("onnxruntime",),
    "gguf": ("llamacpp",),
    "tensorrt": ("tensorrt",),
}


class UnknownArtifactError(RuntimeError_):
    """A path that is neither an HF model dir nor a genrecal export dir."""


def describe(path: str | Path, verify: bool = True) -> tuple[Manifest | None, str]:
    """(manifest or None, default runtime) for an artifact dir; raises a clear error otherwise."""
    root = Path(path)
    if not root.exists():
        raise ManifestError(f"artifact not found: {root}")
    if not root.is_dir():
        raise UnknownArtifactError(f"{root} is a file; give the artifact's directory")
    if (root / MANIFEST_NAME).is_file():
        manifest = load_manifest(root, verify=verify)
        if manifest.format not in FORMAT_RUNTIMES:
            raise UnknownArtifactError(f"{root}: manifest format {manifest.format!r} has no runtime; "
                                       f"known formats: {', '.join(FORMAT_RUNTIMES)}")
        return manifest, FORMAT_RUNTIMES[manifest.format][0]
    if (root / "config.json").is_file():
        return None, "torch"  # a plain transformers model dir (teacher, distilled student, hub snapshot)
    children = sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())
    if children:
        raise UnknownArtifactError(f"{root} is an export root; pick one artifact: "
                                   + ", ".join(str(root / c) for c in children))
    raise UnknownArtifactError(f"{root} is neither an HF model dir (no config.json) nor a genrecal export "
                               f"(no {MANIFEST_NAME})")


def backend_class(name: str) -> type:
    """The runtime class for `name`, imported now; a missing library gives a one-line error."""
    if name not in BACKENDS:
        raise RuntimeError_(f"unknown runtime {name!r}; known: {', '.join(BACKENDS)}")
    module, cls, extra = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise RuntimeError_(f"the {name} runtime is not available here ({exc}); install {extra}") from None
    except AttributeError:
        raise RuntimeError_(f"the {name} runtime ({module}) has no {cls}: this genrecal build lacks it") from None


def load(path: str | Path, runtime: str | None = None, threads: int | None = None, device: str | None = None,
         dtype: str | None = None) -> Runtime:
    """Open an artifact with `runtime` (default: the one its format needs). Sets `.load_ms`.

    device (auto|cpu|cuda) and dtype (auto|fp32|bf16|fp16) are the torch runtime's (see
    runtimes/torch_device.py); given for an artifact another runtime runs, they are refused, not ignored.
    """
    manifest, default = describe(path)
    runtime = runtime or default
    fmt = manifest.format if manifest else "hf"
    if runtime not in FORMAT_RUNTIMES[fmt]:
        raise RuntimeError_(f"{path} is a {fmt} artifact; it runs with {', '.join(FORMAT_RUNTIMES[fmt])}, "
                            f"not {runtime}")
    options = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if options and runtime != "torch":
        flags = " and ".join(f"--{k}" for k in options)
        raise RuntimeError_(f"{flags} apply to the torch runtime (HF model dirs); {path} runs with {runtime}, "
                            "whose device and precision are fixed by the artifact")
    cls = backend_class(runtime)
    t0 = time.perf_counter()
    rt = cls(str(path), threads=threads, **options)
    if not getattr(rt, "load_ms", None):
        rt.load_ms = (time.perf_counter() - t0) * 1000
    return rt


__all__ = ["BACKENDS", "FORMAT_RUNTIMES", "Generation", "Runtime", "RuntimeError_", "Stream", "Timing",
           "UnknownArtifactError", "backend_class", "describe", "load"]
