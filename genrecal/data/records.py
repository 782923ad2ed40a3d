"""The format-neutral record every reader produces, and the checks shared by all formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from genrecal.data.errors import BAD_RECORD, NO_IMAGE, DataError

IMAGE_PLACEHOLDER = "<image>"
SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
ANSWER_IDS_FIELD = "teacher_answer_ids"
"""Optional record field (any layout): the teacher's own generated token ids of the record's final
assistant message, written by `genrecal data teacher-answers` (see genrecal.data.teacher_answers)."""


@dataclass
class RawRecord:
    """One record as read from a file, before image checks and per-turn splitting."""

    source: str
    """The data file (or saved dataset directory) it came from."""
    index: int
    """0-based record index in that file."""
    images: list[str | Path] = field(default_factory=list)
    """A `str` is a path as written in the data, resolved under the image root (and checked
    for escaping it); a `Path` is a file genrecal wrote itself (HF image cache), used as is."""
    messages: list[dict] = field(default_factory=list)
    """`[{"role": "system"|"user"|"assistant", "content": str}, ...]` with `<image>` placeholders."""
    answer_ids: list[int] | None = None
    """The record's `teacher_answer_ids`: the teacher's token ids of its final assistant message."""

    def error(self, reason: str, detail: str, turn: int | None = None) -> DataError:
        return DataError(self.source, self.index, reason, detail, turn)


def checked_messages(rec: RawRecord, *, require_image: bool) -> list[dict]:
    """The record's messages with exactly one `<image>` per image, or raise `DataError`.

    An optional system message comes first; then messages alternate user/assistant, starting
    with the user. Placeholders belong in user messages. Records with images but no placeholder
    get them prepended to the first user message (LLaVA-style data and SmolVLM's the_cauldron
    omit it).
    """
    first_user = _check_roles(rec)
    n_images = len(rec.images)
    if require_image and n_images == 0:
        raise rec.error(NO_IMAGE, "record has no image")
    misplaced = sorted({m["role"] for m in rec.messages if m["role"] != USER and IMAGE_PLACEHOLDER in m["content"]})
    if misplaced:
        raise rec.error(BAD_RECORD, f"{IMAGE_PLACEHOLDER} placeholder in a {' and '.join(misplaced)} message")
    n_user = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in rec.messages)
    messages = [dict(m) for m in rec.messages]
    if n_user == 0 and n_images:
        messages[first_user]["content"] = f"{IMAGE_PLACEHOLDER}\n" * n_images + messages[first_user]["content"]
    elif n_user != n_images:
        raise rec.error(
            BAD_RECORD, f"{n_user} {IMAGE_PLACEHOLDER} placeholders for {n_images} images"
        )
    return messages


def _check_roles(rec: RawRecord) -> int:
    """Raise unless roles are [system], user, assistant, user, ...; return the first user index."""
    if not rec.messages:
        raise rec.error(BAD_RECORD, "empty conversation")
    first = 1 if rec.messages[0]["role"] == SYSTEM else 0
    for i, message in enumerate(rec.messages[first:], start=first):
        expected = USER if (i - first) % 2 == 0 else ASSISTANT
        if message["role"] != expected:
            raise rec.error(
                BAD_RECORD,
                f"message {i} is from {message['role']!r}, expected {expected!r} "
                "(turns must alternate user/assistant, starting with the user, after at most one "
                "leading system message)",
            )
    if len(rec.messages) < first + 2:
        raise rec.error(BAD_RECORD, "conversation has no assistant answer")
    return first
