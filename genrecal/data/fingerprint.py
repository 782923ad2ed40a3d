"""A fingerprint of a training data source, so `genrecal-distill --resume` notices data rewritten in between.

    fingerprint = data_fingerprint("data/train")   # {"path", "files", "sha256"}

It covers the files the records are read from, by content (not mtime): a `.json`/`.jsonl` file, the
`data.json`/`data.jsonl` of a directory, or every file of a saved HF dataset (apart from the image
cache genrecal itself writes there). Image files a record names by path are not read: their paths are
part of the records, their bytes are not.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from genrecal.data.hf_datasets import IMAGE_CACHE_DIR, is_saved_dataset
from genrecal.data.samples import DATA_FILE_NAMES


def _record_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    if is_saved_dataset(path):
        return sorted(p for p in path.rglob("*") if p.is_file() and IMAGE_CACHE_DIR not in p.relative_to(path).parts)
    return [path / name for name in DATA_FILE_NAMES if (path / name).is_file()][:1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def data_fingerprint(path: str | Path) -> dict:
    """{"path": as given, "files": {relative name: sha256}, "sha256": one digest over them}."""
    root = Path(path)
    files = {}
    for f in _record_files(root):
        files[f.name if f == root else f.relative_to(root).as_posix()] = _sha256(f)
    digest = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    return {"path": str(path), "files": files, "sha256": digest}


def changed_files(old: dict, new: dict) -> list[str]:
    """The names whose content differs between two fingerprints (added and removed files included)."""
    a, b = old.get("files", {}), new.get("files", {})
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
