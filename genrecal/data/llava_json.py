"""Reading LLaVA-style conversation records from a JSON list or a JSONL file.

A record: `{"id"?: ..., "image"?: str | [str, ...], "conversations": [{"from": "human",
"value": "<image>\\n..."}, {"from": "gpt", "value": "..."}, ...]}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from genrecal.data.errors import BAD_FILE, BAD_RECORD, DataError
from genrecal.data.records import ASSISTANT, USER, RawRecord

JSONL_SUFFIXES = (".jsonl", ".ndjson")
SPEAKERS = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}


def read_llava(path: Path) -> Iterator[RawRecord | DataError]:
    """Records of a `.json` list or a `.jsonl` file; a bad record is yielded as its DataError.

    Raises DataError(bad_file) at once when a `.json` file is not a JSON list of records.
    """
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _read_jsonl(path)
    objects = _load_json_list(path)
    return (_parse_or_error(obj, str(path), i) for i, obj in enumerate(objects))


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


def _read_jsonl(path: Path) -> Iterator[RawRecord | DataError]:
    source = str(path)
    with path.open("rb") as f:  # bytes, so one badly encoded line is one bad record
        lines = (line for line in f if line.strip())
        for index, line in enumerate(lines):
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield DataError(source, index, BAD_RECORD, f"not valid JSON: {exc}")
                continue
            yield _parse_or_error(obj, source, index)


def _parse_or_error(obj: object, source: str, index: int) -> RawRecord | DataError:
    try:
        return parse_llava_record(obj, source, index)
    except DataError as err:
        return err


def parse_llava_record(obj: object, source: str, index: int) -> RawRecord:
    """One LLaVA record as a RawRecord, or raise DataError(bad_record)."""
    rec = RawRecord(source, index)
    if not isinstance(obj, dict):
        raise rec.error(BAD_RECORD, f"record is a {type(obj).__name__}, expected an object")
    conversations = obj.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise rec.error(BAD_RECORD, "'conversations' must be a non-empty list")
    rec.images = _image_refs(rec, obj.get("image"))
    rec.messages = [_message(rec, i, turn) for i, turn in enumerate(conversations)]
    return rec


def _image_refs(rec: RawRecord, image: object) -> list[str | Path]:
    if image is None:
        return []
    if isinstance(image, str):
        return [image]
    if isinstance(image, list) and all(isinstance(item, str) for item in image):
        return list(image)
    raise rec.error(BAD_RECORD, "'image' must be a path or a list of paths")


def _message(rec: RawRecord, i: int, turn: object) -> dict:
    if not isinstance(turn, dict):
        raise rec.error(BAD_RECORD, f"conversation entry {i} is not an object")
    speaker, value = turn.get("from"), turn.get("value")
    if not isinstance(speaker, str) or speaker not in SPEAKERS:
        raise rec.error(
            BAD_RECORD,
            f"conversation entry {i} is from {speaker!r}, expected one of {list(SPEAKERS)}",
        )
    if not isinstance(value, str):
        raise rec.error(BAD_RECORD, f"conversation entry {i} has no string 'value'")
    return {"role": SPEAKERS[speaker], "content": value}
