"""Record layouts people store VLM conversations in, each read into one `RawRecord`.

- LLaVA / ShareGPT: `conversations` (+ `image` or `images`), e.g.
  `[{"from": "human", "value": "<image>\\nQ"}, {"from": "gpt", "value": "A"}]`.
- HF chat / TRL conversational: `messages` (+ `images`), e.g.
  `[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}, ...]`.
- TRL prompt-completion: `prompt` + `completion` (+ `images`): message lists as above, or strings.
- SmolVLM training sets (the_cauldron): `texts` (+ `images`), `[{"user": "Q", "assistant": "A"}, ...]`;
  the images belong to the first user turn.

Roles `system`, `user`, `assistant` (also `human`/`gpt` and either `role`/`content` or `from`/`value`
keys). Image parts of a message become `<image>` placeholders, in order; the n-th placeholder is
the n-th image. A record matching none of the layouts is refused with the fields it has.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from genrecal.data.errors import BAD_FILE, BAD_RECORD, DataError
from genrecal.data.records import ANSWER_IDS_FIELD, ASSISTANT, IMAGE_PLACEHOLDER, SYSTEM, USER, RawRecord

SPEAKERS = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT, "system": SYSTEM}
LAYOUTS = (  # (name, fields that must all be present), tried in this order
    ("LLaVA", ("conversations",)),
    ("HF chat", ("messages",)),
    ("TRL prompt-completion", ("prompt", "completion")),
    ("SmolVLM texts", ("texts",)),
)
ImageRef = Callable[[RawRecord, object], object]
"""(record, one entry of its image field) -> a path str (data-relative) or a Path genrecal wrote."""


def detect_layout(fields: Iterable[str]) -> str | None:
    """The name of the first layout whose fields are all in `fields`, or None."""
    present = set(fields)
    return next((name for name, need in LAYOUTS if set(need) <= present), None)


def unknown_layout(fields: Iterable[str]) -> str:
    """One line naming the fields found and the layouts understood."""
    known = "; ".join(f"{' + '.join(need)} ({name})" for name, need in LAYOUTS)
    return f"no known record layout: fields found: {', '.join(sorted(fields)) or 'none'}; expected one of: {known}"


def read_records(objects: Iterable[tuple[int, object]], source: str, image_ref: ImageRef
                 ) -> Iterator[RawRecord | DataError]:
    """Parse (index, object) pairs; a bad one is yielded as its DataError.

    Raises DataError(bad_file) when the first object of the file matches no layout: the file is
    then in a layout genrecal does not read, not a file with one bad record.
    """
    recognised = False
    for index, obj in objects:
        if isinstance(obj, DataError):
            yield obj
            continue
        rec = RawRecord(source, index)
        try:
            yield parse_record(rec, obj, image_ref)
            recognised = True
        except DataError as err:
            if err.reason == BAD_FILE and not recognised:
                raise DataError(source, None, BAD_FILE, f"record {index}: {err.detail}") from None
            yield rec.error(BAD_RECORD, err.detail) if err.reason == BAD_FILE else err


def parse_record(rec: RawRecord, obj: object, image_ref: ImageRef) -> RawRecord:
    """Fill `rec` from one record of any layout; DataError(bad_record) when malformed, and
    DataError(bad_file) when it matches no layout."""
    if not isinstance(obj, dict):
        raise rec.error(BAD_RECORD, f"record is a {type(obj).__name__}, expected an object")
    layout = detect_layout(k for k, v in obj.items() if v is not None)
    if layout is None:
        raise rec.error(BAD_FILE, unknown_layout(obj))
    if layout == "LLaVA":
        rec.messages = _messages(rec, obj["conversations"], "conversations")
    elif layout == "HF chat":
        rec.messages = _messages(rec, obj["messages"], "messages")
    elif layout == "TRL prompt-completion":
        rec.messages = _side(rec, obj["prompt"], "prompt", USER) + _side(rec, obj["completion"], "completion",
                                                                         ASSISTANT)
    else:
        rec.messages = _texts(rec, obj["texts"])
    images = obj.get("images", obj.get("image"))
    images = [] if images is None else images if isinstance(images, list) else [images]
    rec.images = [image_ref(rec, image) for image in images]
    rec.answer_ids = _answer_ids(rec, obj.get(ANSWER_IDS_FIELD))
    return rec


def _answer_ids(rec: RawRecord, ids: object) -> list[int] | None:
    """The optional `teacher_answer_ids`: a list of token ids (ints >= 0)."""
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise rec.error(BAD_RECORD, f"'{ANSWER_IDS_FIELD}' must be a list of token ids (integers >= 0)")
    return ids


def _messages(rec: RawRecord, messages: object, field: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise rec.error(BAD_RECORD, f"'{field}' must be a non-empty list of messages")
    return [_message(rec, i, m) for i, m in enumerate(messages)]


def _side(rec: RawRecord, value: object, field: str, role: str) -> list[dict]:
    """A TRL prompt or completion: a message list, or a plain string said by `role`."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, list):
        raise rec.error(BAD_RECORD, f"'{field}' must be a string or a non-empty list of messages")
    return _messages(rec, value, field)


def _texts(rec: RawRecord, texts: object) -> list[dict]:
    """the_cauldron's `[{"user": q, "assistant": a}, ...]` as alternating messages."""
    if not isinstance(texts, list) or not texts:
        raise rec.error(BAD_RECORD, "'texts' must be a non-empty list of {user, assistant} pairs")
    messages = []
    for i, pair in enumerate(texts):
        if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) for k in (USER, ASSISTANT)):
            raise rec.error(BAD_RECORD, f"texts entry {i} needs string 'user' and 'assistant'")
        messages += [{"role": USER, "content": pair[USER]}, {"role": ASSISTANT, "content": pair[ASSISTANT]}]
    return messages


def _message(rec: RawRecord, i: int, message: object) -> dict:
    if not isinstance(message, dict):
        raise rec.error(BAD_RECORD, f"message {i} is not an object")
    speaker = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    if not isinstance(speaker, str) or speaker not in SPEAKERS:
        raise rec.error(BAD_RECORD, f"message {i} is from {speaker!r}, expected one of {list(SPEAKERS)}")
    if isinstance(content, list):
        content = _join_parts(rec, i, content)
    if not isinstance(content, str):
        raise rec.error(BAD_RECORD, f"message {i} content must be a string or a list of parts")
    return {"role": SPEAKERS[speaker], "content": content}


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
