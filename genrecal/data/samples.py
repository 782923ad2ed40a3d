"""Training samples (images + a chat whose last message is the answer to learn) and loading them.

    samples = load_samples("data/llava.json", on_bad="skip", report=(report := SkipReport()))
    print(report.summary())
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genrecal.data.errors import (
    BAD_FILE, EMPTY_ANSWER, MISSING_FILE, NO_IMAGE, TOO_LONG, DataError, SkipReport,
)
from genrecal.data.hf_datasets import is_saved_dataset, read_hf_dataset
from genrecal.data.images import ImageChecker
from genrecal.data.json_files import JSONL_SUFFIXES, read_json_records
from genrecal.data.records import ASSISTANT, IMAGE_PLACEHOLDER, RawRecord, checked_messages

# DataError and SkipReport are re-exported: a Sample's consumers raise/count them too.
__all__ = ["DataError", "Sample", "SkipReport", "load_samples", "split_turns"]

log = logging.getLogger(__name__)

DATA_FILE_NAMES = ("data.json", "data.jsonl")


@dataclass
class Sample:
    """One training example: a conversation ending in the assistant answer to learn."""

    images: list[Path]
    """Absolute, resolved, verified image files, in placeholder order: exactly the images whose
    placeholders are in `messages` (a turn never carries an image of a later turn); may be empty."""
    messages: list[dict]
    """`[{"role": "system"|"user"|"assistant", "content": str}, ...]`: an optional leading system
    message, then user/assistant turns; user text holds one `<image>` placeholder per image; the
    last message is the assistant answer."""
    source: str
    """The data file (or saved dataset directory) the record came from."""
    index: int
    """0-based record index in `source`."""
    turn: int = 0
    """Which assistant turn of the record this sample ends at (0-based)."""
    answer_ids: list[int] | None = None
    """The teacher's own token ids of the answer (the record's `teacher_answer_ids`, kept for the
    record's final assistant message only), or None: the answer text is tokenised."""

    def __post_init__(self):
        if not self.messages or self.messages[-1].get("role") != ASSISTANT:
            raise ValueError("a Sample's last message must be the assistant answer")

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]

    @property
    def question_messages(self) -> list[dict]:
        """Everything before the answer: the prompt the model is conditioned on."""
        return self.messages[:-1]


def load_samples(
    path: str | Path,
    *,
    on_bad: Literal["error", "skip"] = "error",
    report: SkipReport | None = None,
    require_image: bool = False,
    max_chars: int | None = 20000,
    image_root: str | Path | None = None,
    prompts: bool = False,
) -> list[Sample]:
    """Load and validate samples, one per assistant turn of every record.

    path: a `.json` list of records, a `.jsonl` of records, a directory holding
        `data.json`/`data.jsonl`, or a HF dataset directory written by `save_to_disk`; records in
        any layout of `genrecal.data.layouts` (LLaVA, HF chat, TRL prompt-completion, SmolVLM texts).
    on_bad: "error" raises the first bad record's DataError; "skip" drops it, counts it in
        `report` and goes on. A missing or unreadable data file raises either way.
    report: where skipped records are counted (a summary is logged either way).
    require_image: a sample without images is bad (`no_image`): a record without any, or a turn
        whose images all come in later turns. False (default): text-only samples are kept.
    max_chars: a sample whose messages total more characters is bad (`too_long`); None: no limit.
    image_root: image paths are relative to it and must stay inside it as written (symlinks
        inside it may point elsewhere); default: the data file's directory (the dataset directory
        for HF datasets), where the resolved path must stay inside.
    prompts: read prompts to answer instead of answers to learn: one Sample per record, ending at
        its last user message, with an empty assistant answer to fill in (a final assistant message
        is dropped; earlier turns stay as context).
    """
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    records, default_root = _open(Path(path))
    checker = ImageChecker(image_root if image_root is not None else default_root, allow_links=image_root is not None)
    report = report if report is not None else SkipReport()
    skipped_before = report.total
    samples = []
    for item in _samples(records, checker, require_image, max_chars, prompts):
        if isinstance(item, Sample):
            samples.append(item)
        elif on_bad == "error":
            raise item
        else:
            report.add(item)
    if report.total > skipped_before:
        log.warning("%s: kept %d samples, %s", path, len(samples), report.summary())
    return samples


def _open(path: Path) -> tuple[Iterable[RawRecord | DataError], Path]:
    """The records of `path` and the default image root."""
    if not path.exists():
        raise DataError(str(path), None, MISSING_FILE, "data file not found")
    if path.is_dir():
        if is_saved_dataset(path):
            return read_hf_dataset(path), path
        for name in DATA_FILE_NAMES:
            if (path / name).is_file():
                return read_json_records(path / name), path
        raise DataError(
            str(path), None, MISSING_FILE,
            f"directory has no {' or '.join(DATA_FILE_NAMES)} and is not a saved HF dataset",
        )
    if path.suffix.lower() not in (".json", *JSONL_SUFFIXES):
        raise DataError(str(path), None, BAD_FILE, "expected a .json or .jsonl file")
    return read_json_records(path), path.parent


def _samples(
    records: Iterable[RawRecord | DataError],
    checker: ImageChecker,
    require_image: bool,
    max_chars: int | None,
    prompts: bool = False,
) -> Iterator[Sample | DataError]:
    """Every record's per-turn samples (or its prompt), or the DataError that rules a record/turn out."""
    for rec in records:
        if isinstance(rec, DataError):
            yield rec
            continue
        if prompts:
            rec = _as_prompt(rec)
        try:
            messages = checked_messages(rec, require_image=require_image)
            images = checker.resolve(rec)
        except DataError as err:
            yield err
            continue
        if prompts:
            yield _prompt_sample(rec, messages, images, max_chars)
        else:
            yield from split_turns(rec, messages, images, max_chars, require_image)


def _as_prompt(rec: RawRecord) -> RawRecord:
    """The record up to its last user message, plus an empty assistant answer to fill in."""
    messages = list(rec.messages)
    if messages and messages[-1]["role"] == ASSISTANT:
        messages.pop()
    return RawRecord(rec.source, rec.index, rec.images, messages + [{"role": ASSISTANT, "content": ""}])


def _prompt_sample(rec: RawRecord, messages: list[dict], images: list[Path], max_chars: int | None
                   ) -> Sample | DataError:
    n_chars = sum(len(m["content"]) for m in messages)
    if max_chars is not None and n_chars > max_chars:
        return rec.error(TOO_LONG, f"{n_chars} characters > max_chars={max_chars}")
    return Sample(images, messages, rec.source, rec.index, sum(m["role"] == ASSISTANT for m in messages) - 1)


def split_turns(
    rec: RawRecord, messages: list[dict], images: list[Path], max_chars: int | None,
    require_image: bool = False,
) -> Iterator[Sample | DataError]:
    """One Sample per assistant turn, with all earlier turns as context and the images whose
    placeholders those turns hold (the first n images for n placeholders)."""
    ends = [i for i, m in enumerate(messages) if m["role"] == ASSISTANT]
    for turn, end in enumerate(ends):
        context = [dict(m) for m in messages[: end + 1]]
        n_chars = sum(len(m["content"]) for m in context)
        n_images = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in context)
        if not context[-1]["content"].strip():
            yield rec.error(EMPTY_ANSWER, "assistant answer is empty", turn)
        elif max_chars is not None and n_chars > max_chars:
            yield rec.error(TOO_LONG, f"{n_chars} characters > max_chars={max_chars}", turn)
        elif require_image and n_images == 0:
            yield rec.error(NO_IMAGE, "no image up to this turn (its image comes in a later turn)", turn)
        else:
            ids = rec.answer_ids if end == len(messages) - 1 else None  # they belong to the final answer
            yield Sample(images[:n_images], context, rec.source, rec.index, turn, ids)
