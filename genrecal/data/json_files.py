"""Reading conversation records from a JSON list or a JSONL file (any layout in `layouts.py`).

Image entries are paths relative to the image root, as strings or `{"path": str}` objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from genrecal.data.errors import BAD_FILE, BAD_RECORD, DataError
from genrecal.data.layouts import read_records
from genrecal.data.records import RawRecord

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_json_records(path: Path) -> Iterator[RawRecord | DataError]:
    """Records of a `.json` list or a `.jsonl` file; a bad record is yielded as its DataError.

    Raises DataError(bad_file) at once when a `.json` file is not a JSON list of records, and
    when the file's first record matches no known layout (the message names its fields).
    """
    objects = _jsonl_objects(path) if path.suffix.lower() in JSONL_SUFFIXES else enumerate(_load_json_list(path))
    return read_records(objects, str(path), path_ref)


def path_ref(rec: RawRecord, image: object) -> str:
    """An image entry of a JSON record: a path string or `{"path": str}`."""
    if isinstance(image, dict):
        image = image.get("path")
    if not isinstance(image, str):
        raise rec.error(BAD_RECORD, "each image must be a path (a string or {\"path\": ...})")
    return image


def _load_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(str(path), None, BAD_FILE, f"not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise DataError(
            str(path), None, BAD_FILE, f"expected a JSON list of records, got {type(data).__name__}"
        )
    return data


def _jsonl_objects(path: Path) -> Iterator[tuple[int, object]]:
    source = str(path)
    with path.open("rb") as f:  # bytes, so one badly encoded line is one bad record
        lines = (line for line in f if line.strip())
        for index, line in enumerate(lines):
            try:
                yield index, json.loads(line)
            except ValueError as exc:
                yield index, DataError(source, index, BAD_RECORD, f"not valid JSON: {exc}")
