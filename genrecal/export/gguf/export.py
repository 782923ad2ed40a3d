"""export_gguf: a clean HF student dir -> a self-contained llama.cpp artifact dir, checked.

    python -c "from genrecal.export.gguf import export_gguf; export_gguf('student', 'out/gguf', 'q4_k_m')"

Steps: refuse unsupported families before loading weights; write the text GGUF (f32/f16/q8_0 with
gguf-py, q4_k_m through llama.cpp from an F32 intermediate) and the F16 mmproj; read the tensor types
back; validate the pair against llama.cpp's needs; then (check=True) compare with PyTorch — a
full-precision copy tightly (conversion bugs) and the artifact itself by agreement and accuracy
(quantisation noise). The dir appears only when everything passed (build_dir_atomically).
"""
from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from genrecal.export.gguf import layout
from genrecal.export.gguf.layout import GgufExportError
from genrecal.artifacts.gguf_pair.llama_log import missing_bindings
from genrecal.artifacts.gguf_pair.prompt import PromptFormat
from genrecal.families.gguf_parts import GgufRoute
from genrecal.artifacts.manifest import Manifest, build_dir_atomically, dir_sha256

TARGET = "phone"


def family_route(model_type: str) -> GgufRoute:
    """The family's GGUF route for a transformers model_type, or GgufExportError naming the supported ones."""
    from genrecal.families import get_family

    family = get_family(model_type, role="teacher")  # None for a family genrecal has no module for
    if family is None or family.gguf is None:
        raise GgufExportError(layout.unsupported_family_message(model_type))
    return family.gguf


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


def write_text_gguf(path: Path, route: GgufRoute, model, tokenizer, template: str, precision: str) -> dict:
    """model.gguf at f32/f16/q8_0: hyper-parameters, tokenizer, chat template, decoder tensors."""
    from genrecal.export.gguf.tokenizer import add_chat_template, add_tokenizer
    from genrecal.export.gguf.writer import TensorWriter

    n_vocab = model.get_input_embeddings().weight.shape[0]
    out = TensorWriter(path, route.text_arch, precision)
    out.gguf.add_name(f"genrecal {model.config.model_type} student")
    route.tensors.add_text_keys(out.gguf, model, n_vocab)
    facts = add_tokenizer(out.gguf, tokenizer, n_vocab)
    add_chat_template(out.gguf, template, route.image_placeholder)
    for name, arr in route.tensors.text_tensors(model):
        out.add(name, arr)
    out.finish()
    return {"tokenizer_pre": facts.pre, "n_vocab": n_vocab, "add_bos": facts.add_bos,
            "tensor_types": dict(out.types), "fallbacks": out.fallbacks}


@dataclass
class _Job:
    """One export: the loaded source and the options, passed to the build step."""

    route: GgufRoute
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
    client_notes: list  # how llama.cpp's own clients apply the chat template (check_clients)


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
    route = family_route(model_type)  # refuse before loading any weights
    if missing := missing_bindings("gguf", *(["llama_cpp"] if check or quant in layout.KQUANT_TYPES else [])):
        raise GgufExportError(missing)
    model, processor = load_source(hf_dir)
    from genrecal.export.gguf.tokenizer import read_chat_template

    template = read_chat_template(hf_dir, processor.tokenizer)
    client_notes = check_clients(route, processor, template)  # before anything is written
    job = _Job(route, model, processor, template, quant, threads, samples, steps, accuracy_limit, strict_quant,
               hf_dir, client_notes)
    source_sha = dir_sha256(hf_dir)

    def build(tmp: Path) -> Manifest:
        extra, parity = _build(tmp, job, check)
        return Manifest(format="gguf", target=TARGET, family=model_type, precision=quant,
                        source_sha256=source_sha, parity=parity, extra=extra)

    return build_dir_atomically(out_dir, build)


def check_clients(route: GgufRoute, processor, template: str) -> list[str]:
    """What llama.cpp's own clients (llama-cpp-python's MTMDChatHandler, llama-mtmd-cli, llama-server) need of the
    pair beyond genrecal's runtime: every token libmtmd looks up for the projector, and a chat template they can
    apply to an image + a question. GgufExportError (one line) otherwise; returns notes for the manifest on where
    their prompts differ from the HF processor's (docs/export.md, "GGUF in llama.cpp's own clients")."""
    from genrecal.export.gguf.tokenizer import check_client_template, check_libmtmd_tokens

    tokenizer = processor.tokenizer
    check_libmtmd_tokens(tokenizer, route.libmtmd_lookups, str(route.projector_type))
    notes = check_client_template(template, route.image_placeholder, bos=tokenizer.bos_token or "",
                                  eos=tokenizer.eos_token or "")
    layout_mode = route.prompt_format(processor.image_processor).image_layout.get("mode", "mtmd")
    if layout_mode != "mtmd":
        notes.append(f"genrecal's runtime places the image itself ({layout_mode!r} layout) because libmtmd's own "
                     f"layout for the {route.projector_type} projector differs from the HF processor's (e.g. Idefics3 "
                     "without image splitting: libmtmd adds a tile before the overview); llama.cpp's own clients use "
                     "libmtmd's: their prompts and answers can differ")
    return notes


def _write_text(path: Path, job: _Job, precision: str) -> dict:
    if job.route.converter is not None:  # llama.cpp's own converter (converter_route.py)
        from genrecal.export.gguf import converter_route

        return converter_route.write_text(job.route.converter, path, job.source, precision)
    return write_text_gguf(path, job.route, job.model, job.processor.tokenizer, job.template, precision)


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
    if job.route.converter is not None:
        from genrecal.export.gguf import converter_route

        vision = converter_route.write_mmproj(job.route.converter, tmp / layout.MMPROJ_FILE, job.source)
        return {"text": text, "quant": report, "vision": vision}
    spec = job.route.tensors.vision_spec(job.model, job.processor.image_processor)
    vision = write_mmproj(tmp / layout.MMPROJ_FILE, spec, job.route.tensors.vision_tensors(job.model))
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
    from genrecal.artifacts.gguf_pair.validate import validate_pair

    with tempfile.TemporaryDirectory(prefix="genrecal-gguf-") as scratch_dir:
        scratch = Path(scratch_dir)
        written = _write_pair(tmp, scratch, job)
        _check_quant(written["quant"], job.strict_quant)
        validate_pair(tmp / layout.MODEL_FILE, tmp / layout.MMPROJ_FILE)  # before llama.cpp loads them
        extra = _extra(job.route, job.processor, written)
        extra["notes"] = job.route.notes(job.model, job.processor.tokenizer) + job.client_notes
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


def _extra(route: GgufRoute, processor, written: dict) -> dict:
    return {
        "model_file": layout.MODEL_FILE,
        "mmproj_file": layout.MMPROJ_FILE,
        layout.EXTRA_TEXT_ARCH: route.text_arch,
        layout.EXTRA_PROJECTOR: str(route.projector_type),
        layout.EXTRA_PROMPT: route.prompt_format(processor.image_processor).to_dict(),
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
    runtime_eps = job.route.runtime_text_rms_eps
    if runtime_eps is not None:  # measure the runtime's own deviation, then check the conversion exactly
        result["reference_original_eps"] = parity.compare(model, processor, spec, ref, data, job.steps)
        check_model = parity.with_text_rms_eps(model, runtime_eps)
        result["reference_eps"] = runtime_eps
    runtime_model = job.route.runtime_model
    if runtime_model is not None:  # the same, for a runtime graph that differs from the HF model (llava.py)
        result["reference_original"] = parity.compare(model, processor, spec, ref, data, job.steps)
        check_model = runtime_model(model)
        result["reference_runtime_graph"] = job.route.runtime_graph
    result["reference"] = parity.compare(check_model, processor, spec, ref, data, job.steps)
    result["reference"]["precision"] = "f16" if job.quant == "f16" else "f32"
    if job.quant not in ("f32", "f16"):
        result["artifact"] = parity.compare(check_model, processor, spec, artifact, data, job.steps)
    result["accuracy"] = parity.accuracy(model, processor, spec, artifact, job.accuracy_limit)
    parity.enforce(result, job.quant, job.route.logit_tol, job.route.embed_rel_tol)
    return result
