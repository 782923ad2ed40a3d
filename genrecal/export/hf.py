"""The clean HF student: the one dir every other export reads.

    genrecal-export --student runs/x/student --target cpu --out out/   # writes out/hf/ first

A deployable student is a plain transformers dir: config, safetensors weights, processor and
tokenizer. Refused, with the reason: pickle-only checkpoints (`.bin`/`.pt`: unpickling runs code),
custom-code models (`auto_map`: trust_remote_code stays off), and GenRecal training state (the
Recalibrator's tensors or files) unless `strip=True`, which drops them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from genrecal.errors import GenrecalError
from genrecal.artifacts.integrity import check_safetensors, disk_full_guard
from genrecal.families import get_family
from genrecal.artifacts.manifest import Manifest, build_dir_atomically, dir_sha256

# substrings of tensor names that only GenRecal training produces (Recalibrator, its projections)
TRAINING_MARKERS = ("recal", "proj_pre", "proj_post")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# the files AutoProcessor reads, each group one alternative: image processor, tokenizer, its config
PROCESSOR_FILES = (("processor_config.json", "preprocessor_config.json"),
                   ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model"), ("tokenizer_config.json",))
DISK_HINT = "the artifacts already in OUT are intact: free some space and run genrecal-export again"


class StudentDirError(GenrecalError):
    """A student dir that cannot be exported as it is."""


@dataclass
class StudentScan:
    config: dict
    family: str
    weights: list[Path]
    training_keys: list[str] = field(default_factory=list)
    training_files: list[str] = field(default_factory=list)


def _require_config(src: Path) -> dict:
    if not src.is_dir():
        raise StudentDirError(f"student dir not found: {src}")
    cfg = src / "config.json"
    if not cfg.is_file():
        hint = f"; did you mean {src / 'student'} (the student inside a distill run)?" \
            if (src / "student" / "config.json").is_file() else ""
        raise StudentDirError(f"{src} has no config.json: not a transformers model dir{hint}")
    config = json.loads(cfg.read_text())
    if config.get("auto_map"):
        raise StudentDirError(f"{src} needs custom model code (config.json has auto_map); genrecal exports "
                              "only built-in transformers architectures with trust_remote_code off")
    return config


def inspect_student(src: Path) -> StudentScan:
    """Read names only (no tensors): config, weight files, training-only tensors and files."""
    from safetensors import safe_open

    src = Path(src)
    config = _require_config(src)
    family = get_family(config.get("model_type", "?"), role="student").name
    weights = sorted(src.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES)
        what = f"only pickle checkpoints ({', '.join(pickles)})" if pickles else "no weights"
        raise StudentDirError(f"{src} has {what}; genrecal loads safetensors only (unpickling can run code). "
                              "Re-save with model.save_pretrained(dir, safe_serialization=True)")
    scan = StudentScan(config, family, weights)
    for path in weights:
        check_safetensors(path)  # truncated/garbage: CorruptFileError naming the file, not SafetensorError
        with safe_open(str(path), framework="pt") as f:
            scan.training_keys += [k for k in f.keys() if any(m in k.lower() for m in TRAINING_MARKERS)]
    scan.training_files = sorted(p.name for p in src.iterdir() if p.name.lower().startswith("recalibrator"))
    return scan


def load_processor(src: Path):
    """The student's processor, checked before any export work: it loads, is multimodal, and has a chat
    template (every runtime renders prompts with it). StudentDirError naming what is missing otherwise."""
    from transformers import AutoProcessor

    src = Path(src)
    absent = [" or ".join(group) for group in PROCESSOR_FILES if not any((src / name).is_file() for name in group)]
    if absent:
        raise StudentDirError(f"{src} has no processor files {'; '.join(absent)} (what processor.save_pretrained "
                              "writes beside the model): copy them from the model it was trained from")
    try:
        processor = AutoProcessor.from_pretrained(src, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, TypeError, ... for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise StudentDirError(f"{src}: cannot load its processor ({first[:160]}): re-save it with processor."
                              "save_pretrained, or copy its files from the model it was trained from") from None
    if not hasattr(processor, "image_processor"):  # torchvision missing makes this a bare tokenizer
        raise StudentDirError(f"{src}: AutoProcessor gave {type(processor).__name__}, not a multimodal "
                              "processor (is preprocessor_config.json present? is torchvision installed?)")
    tokenizer = getattr(processor, "tokenizer", processor)
    if not (getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)):
        raise StudentDirError(f"{src}: its processor has no chat template (chat_template.jinja), which every "
                              "runtime renders prompts with: copy it from the model it was trained from")
    return processor


def _refuse_training_state(src: Path, scan: StudentScan) -> None:
    parts = []
    if scan.training_keys:
        parts.append(f"{len(scan.training_keys)} tensors such as {', '.join(scan.training_keys[:3])}")
    if scan.training_files:
        parts.append(f"files {', '.join(scan.training_files[:3])}")
    raise StudentDirError(f"{src} holds GenRecal training-only state ({'; '.join(parts)}): a deployable "
                          "student has none. Export the distill run's student/ dir, or pass --strip to drop them")


def export_hf(src: Path, out_dir: Path, strip: bool = False) -> Manifest:
    """Write the clean student (safetensors + processor) to `out_dir` atomically."""
    src = Path(src)
    scan = inspect_student(src)
    if (scan.training_keys or scan.training_files) and not strip:
        _refuse_training_state(src, scan)
    processor = load_processor(src)
    source = dir_sha256(src)

    def build(tmp: Path) -> Manifest:
        from safetensors import SafetensorError
        from transformers import AutoModelForImageTextToText

        # dtype "auto": the clean student keeps the checkpoint's dtype (a bf16 student stays bf16);
        # each format's exporter loads it again at the precision it computes from (fp32)
        try:
            model, info = AutoModelForImageTextToText.from_pretrained(
                src, dtype="auto", trust_remote_code=False, output_loading_info=True)
        except (OSError, ValueError, SafetensorError) as exc:
            raise StudentDirError(f"cannot load the student at {src}: {str(exc).splitlines()[0]}") from None
        if info.get("missing_keys"):
            raise StudentDirError(f"{src} is missing weights the {scan.family} model needs: "
                                  f"{', '.join(sorted(info['missing_keys'])[:5])}")
        unknown = [k for k in info.get("unexpected_keys", []) if not any(m in k.lower() for m in TRAINING_MARKERS)]
        if unknown:
            raise StudentDirError(f"{src} has weights the {scan.family} model does not know: {', '.join(unknown[:5])}")
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if (src / "README.md").is_file():
            (tmp / "README.md").write_text((src / "README.md").read_text())
        return Manifest(format="hf", target="hf", family=scan.family,
                        precision=str(model.dtype).replace("torch.", ""), source_sha256=source,
                        extra={"model_class": type(model).__name__, "stripped_tensors": scan.training_keys,
                               "stripped_files": scan.training_files})

    with disk_full_guard(Path(out_dir).parent, f"{Path(out_dir).name}/ (the clean student)", DISK_HINT):
        return build_dir_atomically(Path(out_dir), build)
