"""Teacher-written answers as training data: the directory `genrecal data teacher-answers` writes,
and rendering a sample on the teacher side from the teacher's own answer tokens.

    DIR/
      manifest.json       the settings the answers were made with (a rerun must match them to
                          resume), counts, and "complete": true once data.json is written
      parts/00000.jsonl   batch k's answers, one line per prompt: {"sample": i, "ids": [...],
                          "truncated": bool}; each part is written atomically and never redone
      images/             the prompts' images, hard-linked (copied across file systems)
      data.json           LLaVA JSON, one record per answered prompt, read by genrecal-distill as is:
                          {"images": [...], "conversations": [...], "teacher_answer_ids": [...],
                          "prompt_record": i} (i: the prompt's 0-based record index in --data)
      skips.json          prompts left out, counted per reason (SkipReport.as_dict)

`teacher_answer_ids` are the ids the teacher generated for the final answer, without the stop
token; the answer text is their decoding (special tokens skipped, whitespace stripped). Training
renders the teacher side from them (prompt ids + these ids + the chat template's end-of-turn ids)
instead of re-tokenising the text, as long as they decode to the record's answer with the run's
teacher tokenizer (`keep_matching_ids`); the student side always tokenises the text.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch

from genrecal import user_text
from genrecal.data.errors import EMPTY_ANSWER, NO_ANSWER_SPAN, TOO_LONG, DataError, SkipReport
from genrecal.data.records import ANSWER_IDS_FIELD, ASSISTANT, SYSTEM, USER
from genrecal.data.render import SEQUENCE_KEYS, Encoded, encode_prompt, prompt_and_answer, render, sample_error
from genrecal.data.samples import Sample
from genrecal.errors import GenrecalError
from genrecal.fsutil import write_text_atomic

log = logging.getLogger(__name__)

DATA_NAME, MANIFEST_NAME, SKIPS_NAME = "data.json", "manifest.json", "skips.json"
PARTS_DIR, IMAGES_DIR = "parts", "images"
LLAVA_SPEAKERS = {USER: "human", ASSISTANT: "gpt", SYSTEM: "system"}


class AnswersDirError(GenrecalError):
    """An output dir holding answers made with other settings (or not made by genrecal)."""


def answer_text(tokenizer, ids: list[int]) -> str:
    """The answer text of generated ids: decoded, special tokens skipped, whitespace stripped."""
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def keep_matching_ids(samples: list[Sample], tokenizer) -> tuple[list[Sample], int]:
    """The samples, with `answer_ids` dropped where they do not decode to the sample's answer under
    `tokenizer` (another teacher's ids, or an edited answer): those answers are tokenised from the
    text instead. Returns (samples, how many had their ids dropped); logs a warning if any."""
    out, dropped = [], 0
    for sample in samples:
        ids = sample.answer_ids
        if ids is not None and (max(ids, default=0) >= len(tokenizer) or
                                answer_text(tokenizer, ids) != sample.answer.strip()):
            sample, dropped = dataclasses.replace(sample, answer_ids=None), dropped + 1
        out.append(sample)
    if dropped:
        log.warning("%d samples carry %s that this teacher's tokenizer does not decode to their answer: "
                    "their answer text is tokenised instead", dropped, ANSWER_IDS_FIELD)
    return out, dropped


def end_of_turn(processor, sample: Sample) -> str | None:
    """What the chat template puts after the sample's answer text (e.g. `<|im_end|>`); None when the
    rendered answer does not contain the answer text."""
    rendered = user_text.unmark(prompt_and_answer(processor, sample)[1])
    content = sample.answer.strip()
    at = rendered.rfind(content) if content else -1
    return None if at < 0 else rendered[at + len(content):]


def render_teacher(processor, sample: Sample, images, max_length: int, image_token_id: int | None) -> Encoded:
    """The sample for the teacher: from its own answer ids when the sample has them (prompt ids +
    answer ids + end-of-turn ids), else `render` from the text. Raises DataError as `render`."""
    if sample.answer_ids is None:
        return render(processor, sample, images, max_length, image_token_id)
    suffix = end_of_turn(processor, sample)
    if suffix is None:
        raise sample_error(sample, NO_ANSWER_SPAN, "the chat template's rendering of the answer does not hold "
                           "the answer text, so the teacher's answer ids cannot be placed")
    tok = getattr(processor, "tokenizer", processor)
    prompt = encode_prompt(processor, sample, images, max_length, image_token_id)
    answer = torch.tensor(sample.answer_ids + tok(suffix, add_special_tokens=False)["input_ids"], dtype=torch.long)
    ids = torch.cat([prompt.input_ids, answer])
    if ids.shape[0] > max_length:
        raise sample_error(sample, TOO_LONG, f"{ids.shape[0]} tokens > max_length {max_length} (raise it with "
                           "--max-length)")
    extras = {k: torch.cat([v, v.new_zeros(answer.shape[0])]) if k in SEQUENCE_KEYS else v
              for k, v in prompt.extras.items()}  # answer tokens are text: type 0
    return Encoded(ids, prompt.length, int(ids.shape[0]), extras, prompt.prompt_text, tok.decode(answer))


# ---- the output directory ----

def check_manifest(out: Path, settings: dict) -> dict:
    """Start or resume `out`: write manifest.json for new settings, or check that the one there
    has the same settings. Returns the manifest. Raises AnswersDirError when they differ."""
    path = out / MANIFEST_NAME
    if path.exists():
        try:
            manifest = json.loads(path.read_text())
        except ValueError:
            raise AnswersDirError(f"{path} is not a teacher-answers manifest; choose another --out") from None
        old = manifest.get("settings", {})
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            raise AnswersDirError(f"{out} holds teacher answers made with other settings ({', '.join(diff)}): "
                                  "rerun with the same ones to resume, or choose another --out")
        return manifest
    if out.exists() and any(out.iterdir()):
        raise AnswersDirError(f"{out} is not empty and holds no teacher answers; choose another --out")
    manifest = {"settings": settings, "complete": False}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(manifest, indent=2))
    return manifest


def part_path(out: Path, k: int) -> Path:
    return out / PARTS_DIR / f"{k:05d}.jsonl"


def write_part(out: Path, k: int, rows: list[dict]) -> None:
    """Batch k's answers `[{"sample": i, "ids": [...], "truncated": bool}, ...]`, atomically."""
    part_path(out, k).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(part_path(out, k), "".join(json.dumps(r) + "\n" for r in rows))


def read_parts(out: Path, n_parts: int) -> dict[int, dict]:
    """Every written answer by sample number (parts that do not exist yet are skipped)."""
    rows = {}
    for k in range(n_parts):
        if part_path(out, k).exists():
            rows.update({r["sample"]: r for r in map(json.loads, part_path(out, k).read_text().splitlines())})
    return rows


def write_dataset(out: Path, samples: list[Sample], rows: dict[int, dict], tokenizer, report: SkipReport,
                  manifest: dict) -> Path:
    """data.json (LLaVA JSON + teacher_answer_ids) from every sample's answer, the images linked
    into out/images, skips.json; empty answers are skipped (`empty_answer`). Marks the manifest complete."""
    records = []
    for i, sample in enumerate(samples):
        row = rows[i]
        text = answer_text(tokenizer, row["ids"])
        if not text:
            report.add(sample_error(sample, EMPTY_ANSWER, "the teacher's answer is empty"))
            continue
        records.append(llava_record(sample, [link_image(p, out) for p in sample.images], text, row["ids"]))
    write_text_atomic(out / DATA_NAME, json.dumps(records, indent=1))
    write_text_atomic(out / SKIPS_NAME, json.dumps(report.as_dict(), indent=2))
    truncated = sum(bool(r["truncated"]) for r in rows.values())
    manifest.update(complete=True, records=len(records), skipped=report.total, truncated=truncated)
    write_text_atomic(out / MANIFEST_NAME, json.dumps(manifest, indent=2))
    return out / DATA_NAME


def llava_record(sample: Sample, images: list[str], text: str, ids: list[int]) -> dict:
    """One LLaVA record: the sample's conversation with `text` as its final answer."""
    turns = [{"from": LLAVA_SPEAKERS[m["role"]], "value": m["content"]} for m in sample.question_messages]
    return {"images": images, "conversations": turns + [{"from": "gpt", "value": text}], ANSWER_IDS_FIELD: ids,
            "prompt_record": sample.index}


def link_image(path: Path, out: Path) -> str:
    """`path` hard-linked (or copied) into out/images under a name unique to its absolute path; the
    path relative to `out`."""
    name = f"{hashlib.sha256(str(path).encode()).hexdigest()[:12]}-{path.name}"
    dest = out / IMAGES_DIR / name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{name}.tmp")
        try:
            os.link(path, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(path, tmp)
        os.replace(tmp, dest)
    return f"{IMAGES_DIR}/{name}"


def prompts_digest(samples: list[Sample]) -> str:
    """sha256 over what each prompt is (source, record, messages, image paths): a changed prompt set
    does not resume another one's parts."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.source, s.index, s.messages, [str(p) for p in s.images]]).encode())
    return h.hexdigest()


__all__ = ["AnswersDirError", "DataError", "check_manifest", "keep_matching_ids", "read_parts", "render_teacher",
           "write_dataset", "write_part"]
