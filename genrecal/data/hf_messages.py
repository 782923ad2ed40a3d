"""Reading a HF `datasets` dataset saved with `save_to_disk` whose rows hold chat `messages`.

A row: `{"messages": [{"role": "user", "content": str | [{"type": "image"}, {"type": "text",
"text": ...}]}, ...], "images": [PIL image | path, ...]}`. The n-th image part is the n-th image.
Embedded image bytes are written once to `<dataset_dir>/.genrecal_images/<sha256>.<ext>` so
that every `Sample` refers to images by path.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from genrecal.data.errors import BAD_FILE, BAD_RECORD, DataError
from genrecal.data.records import ASSISTANT, IMAGE_PLACEHOLDER, USER, RawRecord

IMAGE_CACHE_DIR = ".genrecal_images"
ROLES = (USER, ASSISTANT)
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


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
    if "messages" not in ds.column_names:
        raise DataError(str(path), None, BAD_FILE, f"no 'messages' column in {ds.column_names}")
    return _rows(ds, path)


def _rows(ds, path: Path) -> Iterator[RawRecord | DataError]:
    # Arrow rows are undecoded: images arrive as {"bytes", "path"}, so a corrupt image is one
    # bad record rather than an exception from inside `datasets`.
    cache = path / IMAGE_CACHE_DIR
    index = 0
    for batch in ds.with_format("arrow").iter(batch_size=256):
        for row in batch.to_pylist():
            try:
                yield parse_hf_row(row, str(path), index, cache)
            except DataError as err:
                yield err
            index += 1


def parse_hf_row(row: dict, source: str, index: int, cache: Path) -> RawRecord:
    """One dataset row as a RawRecord, or raise DataError(bad_record)."""
    rec = RawRecord(source, index)
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise rec.error(BAD_RECORD, "'messages' must be a list")
    rec.messages = [_message(rec, i, m) for i, m in enumerate(messages)]
    images = row.get("images") or []
    if not isinstance(images, list):
        images = [images]
    rec.images = [_image_ref(rec, image, cache) for image in images]
    return rec


def _message(rec: RawRecord, i: int, message: object) -> dict:
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise rec.error(BAD_RECORD, f"message {i} needs a 'role' in {list(ROLES)}")
    content = message.get("content")
    if isinstance(content, list):
        content = _join_parts(rec, i, content)
    if not isinstance(content, str):
        raise rec.error(BAD_RECORD, f"message {i} content must be a string or a list of parts")
    return {"role": message["role"], "content": content}


def _join_parts(rec: RawRecord, i: int, parts: list) -> str:
    """Text parts concatenated; each image part becomes `<image>` on its own line."""
    text = ""
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            if text and not text.endswith("\n"):
                text += "\n"
            text += IMAGE_PLACEHOLDER + "\n"
        elif kind == "text" and isinstance(part.get("text"), str):
            text += part["text"]
        else:
            raise rec.error(BAD_RECORD, f"message {i} has a part that is neither image nor text")
    return text.removesuffix("\n") if text.endswith(IMAGE_PLACEHOLDER + "\n") else text


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
