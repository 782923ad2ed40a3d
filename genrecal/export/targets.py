"""Export targets, declared as data: which artifacts each device class gets.

    cpu     ONNX fp32 + int8w + int4 (onnxruntime on x86/ARM CPUs)
    phone   GGUF q4_k_m + q8_0 (mmproj F16, llama.cpp) and ONNX int8w
    jetson  TensorRT Edge-LLM (llm/ + visual/ by Edge-LLM's exporter) for the families it takes with their
            vision; the others: ONNX fp16 in standard ops + genrecal's TensorRT build plan (edgellm/routing.py)
    all     every artifact above

`resolve(target, formats, precisions)` turns CLI choices into the artifact list, and
`check_support(family, artifacts)` refuses unsupported family/format pairs before any work.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from genrecal.errors import GenrecalError
from genrecal.artifacts import layout
from genrecal.families.base import UnsupportedFamilyError

# format -> precisions genrecal can produce in it (tensorrt: the plan; engines are built on device)
FORMATS = {
    "onnx": ("fp32", "int8", "int8w", "int4", "fp16"),  # int8: dynamic, standard ops, in no target by default
    # (activation outliers: 0.825 top-1 on small-smollm2 vs int8w 0.915, onnx/quantize.py)
    "gguf": ("q4_k_m", "q8_0", "f16"),
    "tensorrt": ("plan",),
    "edgellm": ("fp16", "int4_awq", "fp8", "int8_sq", "nvfp4"),  # non-fp16: Edge-LLM's quantiser, CUDA only
}


class TargetError(GenrecalError):
    """An unknown target/format/precision, or a family a format cannot carry."""


@dataclass(frozen=True)
class Artifact:
    format: str
    precision: str

    @property
    def dirname(self) -> str:
        return layout.artifact_dirname(self.format, self.precision)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    artifacts: tuple[Artifact, ...]


def _a(spec: str) -> Artifact:
    fmt, precision = spec.split(":")
    return Artifact(fmt, precision)


TARGETS = {
    "cpu": Target("cpu", "desktop/server CPUs with onnxruntime",
                  (_a("onnx:fp32"), _a("onnx:int8w"), _a("onnx:int4"))),
    "phone": Target("phone", "phones with llama.cpp (GGUF) or onnxruntime mobile",
                    (_a("gguf:q4_k_m"), _a("gguf:q8_0"), _a("onnx:int8w"))),
    "jetson": Target("jetson", "NVIDIA Jetson: TensorRT Edge-LLM, or genrecal's own TensorRT plan for families "
                     "whose vision Edge-LLM cannot take (engines built on the device)",
                     (_a("edgellm:fp16"), _a("onnx:fp16"), _a("tensorrt:plan"))),
}


def target_names() -> list[str]:
    return [*TARGETS, "all"]


def _base(target: str) -> list[Artifact]:
    if target == "all":
        return list(dict.fromkeys(a for t in TARGETS.values() for a in t.artifacts))
    if target not in TARGETS:
        raise TargetError(f"unknown target {target!r}; choose one of {', '.join(target_names())}")
    return list(TARGETS[target].artifacts)


def resolve(target: str, formats: tuple[str, ...] | None = None,
            precisions: tuple[str, ...] | None = None) -> list[Artifact]:
    """The artifacts to write. `formats` keeps only those formats; `precisions` replaces the
    target's precision choice for the chosen formats (e.g. --target cpu --precision fp32)."""
    base = _base(target)
    unknown = [f for f in formats or () if f not in FORMATS]
    if unknown:
        raise TargetError(f"unknown format(s) {', '.join(unknown)}; formats: {', '.join(FORMATS)}")
    fmts = list(formats) if formats else list(dict.fromkeys(a.format for a in base))
    if precisions is None:
        arts = [a for a in base if a.format in fmts]
    else:
        known = {p for f in fmts for p in FORMATS[f]}
        bad = [p for p in precisions if p not in known and p != "plan"]
        if bad:
            choices = "; ".join(f"{f}: {', '.join(FORMATS[f])}" for f in fmts)
            raise TargetError(f"precision(s) {', '.join(bad)} not available for {', '.join(fmts)} ({choices})")
        arts = [Artifact(f, p) for f in fmts for p in FORMATS[f] if p in precisions or f == "tensorrt"]
    if not arts:
        raise TargetError(f"target {target!r} with formats {', '.join(fmts)} selects no artifact; "
                          f"target {target!r} writes: {', '.join(a.dirname for a in base)}")
    return list(dict.fromkeys(arts))


def gguf_module():
    """genrecal.export.gguf, or a clear error when this install has no GGUF writer."""
    try:
        return importlib.import_module("genrecal.export.gguf")
    except ImportError as exc:
        raise TargetError(f"GGUF export is not available in this install ({exc}); "
                          "leave gguf out (e.g. --formats onnx,tensorrt)") from None


def check_support(family: str, artifacts: list[Artifact]) -> None:
    """Refuse, before any export work, a format that cannot carry this family."""
    fmts = {a.format for a in artifacts}
    if fmts & {"onnx", "tensorrt"}:
        from genrecal.families import onnx_spec, with_format

        try:
            onnx_spec(family)
        except UnsupportedFamilyError:
            raise TargetError(f"ONNX/TensorRT export does not support family {family!r}; families with an "
                              f"ONNX wrapper: {', '.join(with_format('onnx'))}") from None
    if "gguf" in fmts:
        gguf = gguf_module()
        supported = gguf.supported_families()
        if family not in supported:
            raise TargetError(f"GGUF export does not support family {family!r} (no llama.cpp writer in "
                              f"genrecal for it); GGUF families: {', '.join(supported)}. "
                              "Pick --formats onnx or --target cpu/jetson")
