"""Reading a HF `datasets` dataset saved with `save_to_disk`, in any layout of `layouts.py`.

E.g. `{"messages": [{"role": "user", "content": str | [{"type": "image"}, {"type": "text",
"text": ...}]}, ...], "images": [PIL image | path, ...]}` (the n-th image part is the n-th image),
TRL's `prompt` + `completion`, or SmolVLM's `texts` + `images`. Embedded image bytes are written
once to `<dataset_dir>/.genrecal_images/<sha256>.<ext>` so that every `Sample` refers to images by
path.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from genrecal.data.errors import BAD_FILE, BAD_RECORD, DataError
from genrecal.data.layouts import detect_layout, read_records, unknown_layout
from genrecal.data.records import RawRecord

IMAGE_CACHE_DIR = ".genrecal_images"
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"RIFF", ".webp"))


def is_saved_dataset(path: Path) -> bool:
    """True for a directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def read_hf_dataset(path: Path) -> Iterator[RawRecord | DataError]:
    """Rows of a saved dataset as RawRecords; a bad row is yielded as its DataError."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("reading HF datasets needs `pip install genrecal[data]`") from exc
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(
            str(path), None, BAD_FILE,
            f"a DatasetDict with splits {list(ds)}; pass one split's directory, "
            f"e.g. {path / 'train'}",
        )
    if detect_layout(ds.column_names) is None:
        raise DataError(str(path), None, BAD_FILE, unknown_layout(ds.column_names))
    cache = path / IMAGE_CACHE_DIR
    return read_records(enumerate(_rows(ds)), str(path), lambda rec, image: _image_ref(rec, image, cache))


def _rows(ds) -> Iterator[dict]:
    # Arrow rows are undecoded: images arrive as {"bytes", "path"}, so a corrupt image is one
    # bad record rather than an exception from inside `datasets`.
    for batch in ds.with_format("arrow").iter(batch_size=256):
        yield from batch.to_pylist()


def _image_ref(rec: RawRecord, image: object, cache: Path) -> str | Path:
    if isinstance(image, str):
        return image
    if isinstance(image, dict) and image.get("bytes"):
        return _cache_bytes(image["bytes"], cache)
    if isinstance(image, dict) and isinstance(image.get("path"), str):
        return image["path"]
    raise rec.error(BAD_RECORD, "image entry is neither a path nor image bytes")


def _cache_bytes(data: bytes, cache: Path) -> Path:
    """Write `data` to the cache once (named by content hash); return its path."""
    suffix = next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".img")
    target = cache / (hashlib.sha256(data).hexdigest() + suffix)
    if target.is_file():
        return target
    cache.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)  # atomic, so a concurrent reader never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
