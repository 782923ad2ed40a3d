"""export_gguf: a clean HF student dir -> a self-contained llama.cpp artifact dir, checked.

    python -c "from genrecal.export.gguf import export_gguf; export_gguf('student', 'out/gguf', 'q4_k_m')"

Steps: refuse unsupported families before loading weights; write the text GGUF (f32/f16/q8_0 with
gguf-py, q4_k_m through llama.cpp from an F32 intermediate) and the F16 mmproj; read the tensor types
back; validate the pair against llama.cpp's needs; then (check=True) compare with PyTorch — a
full-precision copy tightly (conversion bugs) and the artifact itself by agreement and accuracy
(quantisation noise). The dir appears only when everything passed (build_dir_atomically).
"""
from __future__ import annotations

import importlib
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from genrecal.export.gguf import layout
from genrecal.export.gguf.layout import GgufExportError
from genrecal.gguf_pair.llama_log import missing_bindings
from genrecal.gguf_pair.prompt import PromptFormat
from genrecal.manifest import Manifest, build_dir_atomically, dir_sha256

TARGET = "phone"


def family_writer(model_type: str):
    """The writer module for a transformers model_type, or GgufExportError naming the supported ones."""
    if model_type not in layout.FAMILY_WRITERS:
        raise GgufExportError(layout.unsupported_family_message(model_type))
    return importlib.import_module(f"genrecal.export.gguf.{layout.FAMILY_WRITERS[model_type]}")


def _model_type(hf_dir: Path) -> str:
    config = hf_dir / "config.json"
    if not config.is_file():
        raise GgufExportError(f"{hf_dir} is not a transformers model dir (no config.json)")
    return json.loads(config.read_text()).get("model_type", "?")


def load_source(hf_dir: Path):
    """(model in F32 eval mode, processor) from a transformers dir, offline."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(hf_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(hf_dir)
    if not hasattr(processor, "image_processor"):
        raise GgufExportError(f"{hf_dir}: AutoProcessor returned {type(processor).__name__}, not a VLM processor "
                              "(is torchvision installed?)")
    return model, processor


def write_text_gguf(path: Path, writer, model, tokenizer, template: str, precision: str) -> dict:
    """model.gguf at f32/f16/q8_0: hyper-parameters, tokenizer, chat template, decoder tensors."""
    from genrecal.export.gguf.tokenizer import add_chat_template, add_tokenizer
    from genrecal.export.gguf.writer import TensorWriter

    n_vocab = model.get_input_embeddings().weight.shape[0]
    out = TensorWriter(path, writer.TEXT_ARCH, precision)
    out.gguf.add_name(f"genrecal {model.config.model_type} student")
    writer.add_text_keys(out.gguf, model, n_vocab)
    facts = add_tokenizer(out.gguf, tokenizer, n_vocab)
    add_chat_template(out.gguf, template, writer.IMAGE_PLACEHOLDER)
    for name, arr in writer.text_tensors(model):
        out.add(name, arr)
    out.finish()
    return {"tokenizer_pre": facts.pre, "n_vocab": n_vocab, "add_bos": facts.add_bos,
            "tensor_types": dict(out.types), "fallbacks": out.fallbacks}


@dataclass
class _Job:
    """One export: the loaded source and the options, passed to the build step."""

    writer: ModuleType
    model: object
    processor: object
    template: str
    quant: str
    threads: int | None
    samples: int
    steps: int
    accuracy_limit: int
    strict_quant: bool
    source: Path  # the transformers dir (llama.cpp's converter reads it, not the loaded model)


def export_gguf(hf_dir: Path, out_dir: Path, quant: str = "q4_k_m", check: bool = True, *,
                threads: int | None = None, samples: int = 3, steps: int = 16, accuracy_limit: int = 16,
                strict_quant: bool = False) -> Manifest:
    """Export a transformers VLM dir to `out_dir` (model.gguf, mmproj.gguf, genrecal_manifest.json).

    quant: f32 | f16 | q8_0 | q4_k_m (text model; the mmproj stays F16). check: compare with PyTorch
    on `samples` easy-vqa test images for `steps` greedy steps, and exact-match accuracy on
    `accuracy_limit` questions (recorded in manifest.parity; a failed check raises and writes nothing).
    threads: llama.cpp threads for quantisation and the checks (checks default to 1, PyTorch too).
    strict_quant: raise when llama.cpp silently used a non-K type for some weight (default: warn and
    record it in manifest.extra["quantization"]).
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if quant not in layout.QUANTS:
        raise GgufExportError(f"unknown GGUF precision {quant!r}; choose one of {', '.join(layout.QUANTS)}")
    model_type = _model_type(hf_dir)
    writer = family_writer(model_type)  # refuse before loading any weights
    if missing := missing_bindings("gguf", *(["llama_cpp"] if check or quant in layout.KQUANT_TYPES else [])):
        raise GgufExportError(missing)
    model, processor = load_source(hf_dir)
    from genrecal.export.gguf.tokenizer import read_chat_template

    job = _Job(writer, model, processor, read_chat_template(hf_dir, processor.tokenizer), quant, threads, samples,
               steps, accuracy_limit, strict_quant, hf_dir)
    source_sha = dir_sha256(hf_dir)

    def build(tmp: Path) -> Manifest:
        extra, parity = _build(tmp, job, check)
        return Manifest(format="gguf", target=TARGET, family=model_type, precision=quant,
                        source_sha256=source_sha, parity=parity, extra=extra)

    return build_dir_atomically(out_dir, build)


def _write_text(path: Path, job: _Job, precision: str) -> dict:
    if getattr(job.writer, "CONVERTER", False):  # llama.cpp's own converter (converter.py)
        return job.writer.write_text(path, job.source, precision)
    return write_text_gguf(path, job.writer, job.model, job.processor.tokenizer, job.template, precision)


def _write_pair(tmp: Path, scratch: Path, job: _Job) -> dict:
    """Write model.gguf + mmproj.gguf into tmp (the F32 intermediate, if any, into scratch)."""
    from genrecal.export.gguf.mmproj import write_mmproj
    from genrecal.export.gguf.quantize import llama_quantize, tensor_report

    model_path = tmp / layout.MODEL_FILE
    if job.quant in layout.KQUANT_TYPES:
        text = _write_text(scratch / "model-f32.gguf", job, "f32")
        llama_quantize(scratch / "model-f32.gguf", model_path, job.quant, job.threads)
    else:
        text = _write_text(model_path, job, job.quant)
    report = tensor_report(model_path, job.quant)
    report["fallbacks"] = report["fallbacks"] + text.pop("fallbacks")
    text.pop("tensor_types", None)
    if getattr(job.writer, "CONVERTER", False):
        return {"text": text, "quant": report, "vision": job.writer.write_mmproj(tmp / layout.MMPROJ_FILE, job.source)}
    spec = job.writer.vision_spec(job.model, job.processor.image_processor)
    vision = write_mmproj(tmp / layout.MMPROJ_FILE, spec, job.writer.vision_tensors(job.model))
    return {"text": text, "quant": report, "vision": vision}


def _reference_path(tmp: Path, scratch: Path, job: _Job) -> Path:
    """A full-precision text GGUF to check the conversion itself: the artifact when it is f32/f16."""
    if job.quant in ("f32", "f16"):
        return tmp / layout.MODEL_FILE
    ref = scratch / "model-f32.gguf"
    if not ref.is_file():  # q8_0 has no intermediate; q4_k_m's is reused
        _write_text(ref, job, "f32")
    return ref


def _build(tmp: Path, job: _Job, check: bool) -> tuple[dict, dict]:
    """Write, read back, validate and (check) compare; returns (manifest extra, manifest parity)."""
    from genrecal.gguf_pair.validate import validate_pair

    with tempfile.TemporaryDirectory(prefix="genrecal-gguf-") as scratch_dir:
        scratch = Path(scratch_dir)
        written = _write_pair(tmp, scratch, job)
        _check_quant(written["quant"], job.strict_quant)
        validate_pair(tmp / layout.MODEL_FILE, tmp / layout.MMPROJ_FILE)  # before llama.cpp loads them
        extra = _extra(job.writer, job.processor, written)
        extra["notes"] = job.writer.notes(job.model, job.processor.tokenizer)
        if not check:
            return extra, {"checked": False}
        ref = _reference_path(tmp, scratch, job)
        return extra, _parity(job, tmp, ref, extra)


def _check_quant(report: dict, strict: bool) -> None:
    if report.get("fallbacks") and report["requested"] in layout.KQUANT_TYPES:
        msg = f"{report['warning']}: {', '.join(report['fallbacks'][:6])}"
        if strict:
            raise GgufExportError(msg)
        warnings.warn(msg, stacklevel=3)


def _extra(writer, processor, written: dict) -> dict:
    return {
        "model_file": layout.MODEL_FILE,
        "mmproj_file": layout.MMPROJ_FILE,
        layout.EXTRA_TEXT_ARCH: writer.TEXT_ARCH,
        layout.EXTRA_PROJECTOR: writer.PROJECTOR_TYPE,
        layout.EXTRA_PROMPT: writer.prompt_format(processor.image_processor).to_dict(),
        layout.EXTRA_QUANT: written["quant"],
        "mmproj": {"precision": "f16", **written["vision"]},
        "tokenizer": {k: written["text"][k] for k in ("tokenizer_pre", "n_vocab", "add_bos")},
        "writer": written["text"].get("converter", "genrecal (gguf-py)"),
    }


def _parity(job: _Job, tmp: Path, ref: Path, extra: dict) -> dict:
    from genrecal.export.gguf import parity

    prompt = PromptFormat.from_dict(extra[layout.EXTRA_PROMPT])
    spec = parity.PairSpec(mmproj=tmp / layout.MMPROJ_FILE, prompt=prompt, threads=job.threads or 1)
    data = parity.easy_vqa_samples(job.samples)
    model, processor, artifact = job.model, job.processor, tmp / layout.MODEL_FILE
    result = {"checked": True, "samples": len(data), "steps": job.steps}
    check_model = model  # what the conversion is held to
    runtime_eps = getattr(job.writer, "RUNTIME_TEXT_RMS_EPS", None)
    if runtime_eps is not None:  # measure the runtime's own deviation, then check the conversion exactly
        result["reference_original_eps"] = parity.compare(model, processor, spec, ref, data, job.steps)
        check_model = parity.with_text_rms_eps(model, runtime_eps)
        result["reference_eps"] = runtime_eps
    runtime_model = getattr(job.writer, "runtime_model", None)
    if runtime_model is not None:  # the same, for a runtime graph that differs from the HF model (llava.py)
        result["reference_original"] = parity.compare(model, processor, spec, ref, data, job.steps)
        check_model = runtime_model(model)
        result["reference_runtime_graph"] = job.writer.RUNTIME_GRAPH
    result["reference"] = parity.compare(check_model, processor, spec, ref, data, job.steps)
    result["reference"]["precision"] = "f16" if job.quant == "f16" else "f32"
    if job.quant not in ("f32", "f16"):
        result["artifact"] = parity.compare(check_model, processor, spec, artifact, data, job.steps)
    result["accuracy"] = parity.accuracy(model, processor, spec, artifact, job.accuracy_limit)
    parity.enforce(result, job.quant, getattr(job.writer, "LOGIT_TOL", None),
                   getattr(job.writer, "EMBED_REL_TOL", None))
    return result
