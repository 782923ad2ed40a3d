"""The artifact manifest: defined once, imported by export (writer) and runtimes (reader).

Every export output dir holds `genrecal_manifest.json`: format version, target, format, family,
precision, the source student's sha256, every file with size and sha256, tool versions and parity
results. Dirs are written atomically (build in a sibling temp dir, then rename); a loader refuses a
file whose checksum does not match.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

from genrecal.errors import GenrecalError
from genrecal.fsutil import atomic_dir, write_text_atomic

FORMAT_VERSION = 1
MANIFEST_NAME = "genrecal_manifest.json"
TOOLS = ("genrecal", "torch", "transformers", "onnx", "onnxruntime", "gguf", "llama-cpp-python", "tensorrt")


class ManifestError(GenrecalError):
    """A missing, unreadable or tampered artifact."""


@dataclass
class Manifest:
    format: str  # "hf" | "onnx" | "gguf" | "tensorrt"
    target: str  # "cpu" | "phone" | "jetson" | "hf"
    family: str  # transformers model_type of the student
    precision: str  # e.g. "fp32", "int8", "q4_k_m", "fp16"
    source_sha256: str  # digest of the source student dir (see dir_sha256)
    files: dict[str, dict] = field(default_factory=dict)  # relpath -> {"size", "sha256"}
    tools: dict[str, str] = field(default_factory=dict)
    parity: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # format-specific facts (graph names, ids, plan, ...)
    format_version: int = FORMAT_VERSION
    created: str = ""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)


def dir_sha256(root: Path) -> str:
    """One digest for a directory: sha256 over (relpath, file sha256) of every file."""
    h = hashlib.sha256()
    for p in list_files(Path(root)):
        h.update(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Fill files/tools/created from what is in `root` and write the manifest (atomically)."""
    root = Path(root)
    manifest.files = {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                      for p in list_files(root)}
    manifest.tools = manifest.tools or tool_versions()
    manifest.created = manifest.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_text_atomic(root / MANIFEST_NAME, json.dumps(asdict(manifest), indent=2, default=str))
    return manifest


def build_dir_atomically(final: Path, build: Callable[[Path], Manifest]) -> Manifest:
    """Run `build(tmp_dir)` (it writes files and returns a Manifest), write the manifest, then
    swap the temp dir into place. A failure leaves any previous `final` untouched."""
    with atomic_dir(final) as tmp:
        manifest = write_manifest(tmp, build(tmp))
    return manifest


def load_manifest(root: Path, verify: bool = True) -> Manifest:
    """Read and (by default) verify every listed file's size and sha256."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.is_dir():
        raise ManifestError(f"artifact dir not found: {root}")
    if not path.is_file():
        raise ManifestError(f"{root} has no {MANIFEST_NAME}: not a genrecal export (re-run genrecal-export)")
    try:
        data = json.loads(path.read_text())
        manifest = Manifest(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ManifestError(f"{path} is unreadable: {exc}") from None
    if manifest.format_version > FORMAT_VERSION:
        raise ManifestError(f"{path} has format_version {manifest.format_version}; this genrecal reads "
                            f"<= {FORMAT_VERSION} (upgrade genrecal)")
    if verify:
        verify_files(root, manifest)
    return manifest


def verify_files(root: Path, manifest: Manifest) -> None:
    for rel, info in manifest.files.items():
        p = root / rel
        if not p.is_file():
            raise ManifestError(f"{root}: file {rel} listed in the manifest is missing")
        if p.stat().st_size != info["size"] or sha256_file(p) != info["sha256"]:
            raise ManifestError(f"{root}: checksum mismatch for {rel}: the file was modified or corrupted "
                                "after export; refusing to load it (re-export)")
