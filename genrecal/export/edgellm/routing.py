"""Which Jetson path a family takes: Edge-LLM where it takes the family's vision, genrecal's own otherwise.

    artifacts = route("jetson", None, "llava", targets.resolve("jetson"), log)   # prints the one line

`--target jetson` lists edgellm-fp16, onnx-fp16 and tensorrt-plan (targets.TARGETS); with the target's own
choice of formats (no --formats):
  - a family whose record says Edge-LLM takes it (Family.edgellm) keeps the Edge-LLM artifact(s) only (`--target all`: everything): Jetson
    users run Edge-LLM, and genrecal's own TensorRT runtime refuses the M-RoPE families;
  - any other family loses the Edge-LLM artifact(s), with one line saying why, and gets genrecal's own
    standard-ops ONNX fp16 + TensorRT plan (named as such): never a text-only Edge-LLM artifact.
With --formats, explicit choices are kept, except that an edgellm artifact for a family
whose vision Edge-LLM cannot take is refused (TargetError) before any work, and so is a quantised edgellm
precision where no CUDA GPU is visible (one line: Edge-LLM's quantiser needs one).
"""
from __future__ import annotations

from genrecal.artifacts import edgellm as layout
from genrecal.export.edgellm.student import fallback_line, no_vision_reason, takes_vision


def _artifact(fmt: str, precision: str):
    from genrecal.export.targets import Artifact

    return Artifact(fmt, precision)


def route(target: str, formats: tuple[str, ...] | None, family: str, artifacts: list, log=print) -> list:
    from genrecal.export.targets import TargetError

    from genrecal.export.edgellm.quantize import NO_GPU, cuda_visible

    edge = [a for a in artifacts if a.format == layout.FORMAT]
    if not edge:
        return artifacts
    quantised = [a.precision for a in edge if a.precision != "fp16"]
    if quantised and takes_vision(family) and not cuda_visible():
        raise TargetError(NO_GPU.format(precision=quantised[0]))
    vision = takes_vision(family)
    if formats is not None:  # asked for by name: kept, or refused for a family Edge-LLM cannot take
        if not vision:
            raise TargetError(f"edgellm: {no_vision_reason(family)}; for {family} pick --formats "
                              "onnx,tensorrt (genrecal's own TensorRT path)")
        return artifacts
    if vision:
        return edge if target == "jetson" else artifacts
    log(fallback_line(family))
    rest = [a for a in artifacts if a.format != layout.FORMAT]
    for own in (_artifact("onnx", "fp16"), _artifact("tensorrt", "plan")):
        if own not in rest:
            rest.append(own)
    return rest
