"""One export run: clean HF student -> every artifact of a target, checked, with a summary.

    from genrecal.export.run import ExportOptions, export
    summary = export(ExportOptions(student=Path("runs/x/student"), out=Path("out"), target="cpu"))

Everything that can be refused (unknown target/format/precision, a family a format cannot carry,
a student dir with training state, an output path holding something that is not a genrecal
artifact) is refused before any export work starts. Each artifact dir is written atomically, so a
re-run over an existing OUT replaces artifacts one by one and a failure leaves the old one intact.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from genrecal.errors import GenrecalError
from genrecal.artifacts import layout
from genrecal.export import targets
from genrecal.export.hf import DISK_HINT, export_hf, inspect_student, load_processor
from genrecal.fsutil import write_text_atomic
from genrecal.artifacts.integrity import DiskFullError, disk_full_guard
from genrecal.artifacts.manifest import MANIFEST_NAME, Manifest, tool_versions


@dataclass
class ExportOptions:
    student: Path  # a transformers student dir (safetensors + processor)
    out: Path  # output root; gets hf/, onnx-*/, gguf-*/, tensorrt-plan/, export_summary.json
    target: str = "cpu"  # cpu | phone | jetson | all (see targets.py)
    formats: tuple[str, ...] | None = None  # keep only these formats of the target
    precisions: tuple[str, ...] | None = None  # replace the target's precisions
    check: bool = True  # parity against PyTorch for every artifact
    strip: bool = False  # drop Recalibrator/training tensors instead of refusing them
    threads: int | None = None  # torch + onnxruntime threads for the parity runs
    device_profile: str | None = None  # the TensorRT plan is sized for it (default jetson-orin-nano)
    onnx_decoder: str = "auto"  # auto | builder (onnxruntime-genai's decoder graph, onnx/builder_decoder.py) | torchscript


class OutputDirError(GenrecalError):
    """An output path that would overwrite something genrecal did not write."""


def guard_out(out: Path, names: list[str]) -> None:
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} exists and is not a directory")
    for name in names:
        path = out / name
        if path.exists() and not (path / MANIFEST_NAME).is_file():
            raise OutputDirError(f"{path} exists and is not a genrecal artifact (no {MANIFEST_NAME}); "
                                 "not replacing it: pick another --out or move it away")


def _owner(artifact: targets.Artifact, requested: str) -> str:
    """The target an artifact is recorded under (for --target all: the first target that lists it)."""
    if requested != "all":
        return requested
    return next(name for name, t in targets.TARGETS.items() if artifact in t.artifacts)


def _build(artifact: targets.Artifact, out: Path, onnx, opts: ExportOptions) -> Manifest:
    final, target = out / artifact.dirname, _owner(artifact, opts.target)
    if artifact.format == "onnx":
        return onnx.build(final, artifact.precision, target)
    if artifact.format == "tensorrt":
        from genrecal.export.tensorrt import write_plan_dir

        return write_plan_dir(onnx, final, target, opts.device_profile)
    if artifact.format == "edgellm":
        from genrecal.export.edgellm.export import DEFAULT_PROFILE, write_edgellm_dir

        return write_edgellm_dir(out / layout.HF_DIR, final, precision=artifact.precision, check=opts.check,
                                 profile=opts.device_profile or DEFAULT_PROFILE)
    return targets.gguf_module().export_gguf(out / layout.HF_DIR, final, artifact.precision, opts.check)


def _status(manifest: Manifest) -> str:
    parity = manifest.parity or {}
    if "passed" not in parity:
        return "ok (not checked)" if parity.get("note") or parity.get("checked") is False else "ok"
    return "ok" if parity["passed"] else "parity-failed"


def export(opts: ExportOptions, log=print) -> dict:
    """Run the export; returns the summary (also written to OUT/export_summary.json)."""
    artifacts = targets.resolve(opts.target, opts.formats, opts.precisions)
    scan = inspect_student(Path(opts.student))
    load_processor(Path(opts.student))  # missing processor files are refused before OUT is touched
    from genrecal.export.edgellm.routing import route

    artifacts = route(opts.target, opts.formats, scan.family, artifacts, log)  # Edge-LLM or genrecal's own plan
    targets.check_support(scan.family, artifacts)
    if opts.device_profile and any(a.format in ("tensorrt", "edgellm") for a in artifacts):
        from genrecal.artifacts.profiles import get_profile

        get_profile(opts.device_profile)  # an unknown name is refused before any work
    out = Path(opts.out)
    guard_out(out, [layout.HF_DIR] + [a.dirname for a in artifacts])
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    log(f"export {opts.student} ({scan.family}) -> {out}: {layout.HF_DIR}, "
        + ", ".join(a.dirname for a in artifacts))
    # the summary describes a finished export: a run that stops early must not leave the last one's behind
    (out / layout.SUMMARY_NAME).unlink(missing_ok=True)
    export_hf(Path(opts.student), out / layout.HF_DIR, strip=opts.strip)
    records = []
    from genrecal.export.onnx import OnnxBuild

    with tempfile.TemporaryDirectory(dir=out, prefix=".genrecal-work-") as work:
        onnx = OnnxBuild(out / layout.HF_DIR, Path(work), check=opts.check, threads=opts.threads,
                         decoder=opts.onnx_decoder)
        for artifact in artifacts:
            t0 = time.perf_counter()
            record = {"dir": artifact.dirname, "format": artifact.format, "precision": artifact.precision}
            try:
                with disk_full_guard(out, artifact.dirname, DISK_HINT):
                    manifest = _build(artifact, out, onnx, opts)
                record.update(status=_status(manifest), parity=manifest.parity)
            except DiskFullError:  # every later artifact would fail the same way: stop here, in one line
                raise
            except GenrecalError as exc:  # one artifact failing does not lose the others
                record.update(status="error", error=str(exc))
            record["seconds"] = round(time.perf_counter() - t0, 1)
            log(f"  {artifact.dirname:16s} {record['status']} ({record['seconds']} s)")
            records.append(record)
    summary = {"student": str(opts.student), "family": scan.family, "target": opts.target, "out": str(out),
               "hf": layout.HF_DIR, "artifacts": records, "tools": tool_versions(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with disk_full_guard(out, layout.SUMMARY_NAME, DISK_HINT):
        write_text_atomic(out / layout.SUMMARY_NAME, json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def failed(summary: dict) -> list[dict]:
    return [r for r in summary["artifacts"] if r["status"] in ("error", "parity-failed")]
