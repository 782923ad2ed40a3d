"""Benchmark result records: what every result JSON holds, and reading them back for a report.

A result is one JSON object with `kind` ("latency" | "accuracy"), `schema`, `artifact` (path,
format, precision, family, runtime, role, label), `device` (sysinfo.device_info) and the kind's
own figures. A results file may hold one object or a list of them; `genrecal-bench report` takes
files and directories (every *.json inside), so results made on a device merge with local ones.
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np

from genrecal.errors import GenrecalError
from genrecal.fsutil import write_text_atomic

SCHEMA = 1
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the genrecal package this code runs from
KINDS = ("latency", "accuracy")
ROLES = ("teacher", "student", "model")


class ResultsError(GenrecalError):
    """A results file that is missing, unreadable, or not a genrecal-bench result."""


def artifact_info(path: str | os.PathLike, runtime: str | None, role: str | None = None,
                  label: str | None = None) -> dict:
    """Describe an artifact for results: format/precision from its manifest (verified), or an HF dir."""
    from genrecal import runtimes

    manifest, default = runtimes.describe(path, verify=False)  # runtimes.load verifies the checksums
    runtime = runtime or default
    if manifest is None:
        fmt, precision, family, target = "hf", _hf_dtype(Path(path)), _hf_family(Path(path)), None
    else:
        fmt, precision, family, target = manifest.format, manifest.precision, manifest.family, manifest.target
    role = role or ("student" if manifest is not None else "model")
    if role not in ROLES:
        raise GenrecalError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    size = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    return {
        "path": str(Path(path).resolve()), "name": Path(path).resolve().name, "format": fmt,
        "precision": precision, "family": family, "target": target, "runtime": runtime, "role": role,
        "label": label or f"{role} {runtime} {precision}", "size_mb": round(size / 2**20, 2),
        "files": sorted(manifest.files) if manifest else None,
    }


def computed_as(info: dict, rt, label: str | None = None) -> dict:
    """`info` for what the runtime really computes: a torch-run model's precision becomes the dtype it
    runs in (the checkpoint's stays as `checkpoint_precision`), plus its device; other runtimes: unchanged."""
    from genrecal.runtimes.torch_device import SHORT

    place = getattr(rt, "placement", None)
    if place is None:
        return info
    precision = SHORT.get(place.dtype, place.dtype)
    checkpoint = SHORT.get(info["precision"], info["precision"])  # an hf export's manifest says "bfloat16"
    out = {**info, "checkpoint_precision": checkpoint, "precision": precision, "device": place.device}
    if label is None:
        out["label"] = f"{info['role']} {info['runtime']} {precision}" + (" cuda" if place.device == "cuda" else "")
    return out


def provenance() -> dict:
    """Which genrecal produced a result (the path shows whether a bundle ran its own copy)."""
    import sys

    return {"version": genrecal_version(), "path": str(PACKAGE_DIR), "python": sys.executable, "argv": sys.argv}


def genrecal_version() -> str:
    try:
        from genrecal import __version__

        return __version__
    except ImportError:  # an editable install that maps genrecal as a namespace package
        from importlib import metadata

        return metadata.version("genrecal")


def _hf_config(root: Path) -> dict:
    try:
        return json.loads((root / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _hf_dtype(root: Path) -> str:
    from genrecal.runtimes.torch_device import SHORT, checkpoint_dtype

    dtype = checkpoint_dtype(root) or "float32"
    return SHORT.get(dtype, dtype)


def _hf_family(root: Path) -> str | None:
    return _hf_config(root).get("model_type")


def summarize(values: list[float]) -> dict:
    """Median and p90 (linear interpolation) plus min/max/mean of one metric over runs."""
    arr = np.asarray(values, dtype=float)
    return {"median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)), "min": float(arr.min()),
            "max": float(arr.max()), "mean": float(statistics.fmean(arr))}


def write_json(result: dict | list, path: str | os.PathLike) -> Path:
    """Write atomically (temp file + rename) so a killed run never leaves half a JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2, default=str) + "\n")
    return path


def write_report(result: dict, out: str | os.PathLike, stem: str, markdown: str, plot=None) -> dict[str, Path]:
    """OUT/STEM.json and OUT/STEM.md written atomically, and OUT/STEM.png by `plot(result, path)` when
    given (it returns the path, or None when there is nothing to plot). Returns {"json", "md"[, "png"]}."""
    out = Path(out)
    paths = {"json": write_json(result, out / f"{stem}.json"), "md": out / f"{stem}.md"}
    write_text_atomic(paths["md"], markdown)
    png = plot(result, out / f"{stem}.png") if plot is not None else None
    if png:
        paths["png"] = Path(png)
    return paths


def load_results(paths: list[str | os.PathLike]) -> list[dict]:
    """Every result object in the given files and directories (directories: *.json, recursively)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.json") if not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise ResultsError(f"results path not found: {p}")
    out: list[dict] = []
    for f in files:
        out += _read(f)
    if not out:
        raise ResultsError(f"no genrecal-bench results in {', '.join(map(str, paths))}")
    return out


def _read(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not readable as JSON ({exc})") from None
    items = data if isinstance(data, list) else data.get("results", [data]) if isinstance(data, dict) else None
    results = [r for r in (items or []) if isinstance(r, dict) and r.get("kind") in KINDS and "artifact" in r]
    if isinstance(data, dict) and data.get("kind") is None and not results:
        return []  # some other JSON that happens to sit in a results dir (e.g. bundle.json)
    if not results:
        raise ResultsError(f"{path}: not a genrecal-bench result (needs kind in {KINDS} and artifact)")
    for r in results:
        if r.get("schema", 0) > SCHEMA:
            raise ResultsError(f"{path}: result schema {r['schema']} is newer than this genrecal ({SCHEMA})")
        r.setdefault("source_file", str(path))
    return results
