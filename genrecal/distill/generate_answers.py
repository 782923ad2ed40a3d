"""`genrecal data teacher-answers`: a teacher answers unlabelled prompts, and its answers become training data.

    genrecal data teacher-answers --teacher T --data prompts.json --out DIR [--batch-size 8] [--max-new-tokens 256]

The prompts are records in any layout genrecal reads (a record's final assistant message, if it has
one, is dropped and answered anew; earlier turns stay as context). The teacher (any registered
family, or the generic path) answers greedily in left-padded batches; each batch's answers are a
part file written atomically, so a killed run started again with the same command redoes no
finished part. When every part is written, DIR/data.json (LLaVA JSON with the teacher's token ids,
which genrecal-distill reads as is) is assembled; the layout is in genrecal.data.teacher_answers.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genrecal.data.errors import BAD_FILE
from genrecal.data.records import ASSISTANT
from genrecal.data.render import SEQUENCE_KEYS, collate, encode_prompt, load_images
from genrecal.data.samples import DataError, Sample, SkipReport, load_samples
from genrecal.data.teacher_answers import (
    check_manifest, end_of_turn, part_path, prompts_digest, read_parts, write_dataset, write_part,
)
from genrecal.distill.config import AnswerConfig
from genrecal.distill.launch import device_type
from genrecal.distill.lengths import default_max_length
from genrecal.distill.models import LoadedVLM, checkpoint_dtype, load_vlm, read_config
from genrecal.distill.precision import TORCH_DTYPES, resolve_dtype


def teacher_answers(cfg: AnswerConfig, progress: bool = True) -> Path:
    """Answer every usable prompt (resuming finished parts) and write DIR/data.json; returns its path.

    Raises DataError (a bad prompt with on_bad_sample=error, a missing data file), ModelLoadError,
    ConfigError, AnswersDirError (DIR holds answers made with other settings)."""
    dtype = resolve_dtype(cfg.dtype, checkpoint_dtype(read_config(cfg.teacher, "teacher", cfg.trust_remote_code)),
                          device_type())
    teacher = load_vlm(cfg.teacher, "teacher", cfg.trust_remote_code, dtype=TORCH_DTYPES[dtype])
    teacher.model.to(device_type())
    report = SkipReport()
    samples = load_samples(cfg.data, on_bad=cfg.on_bad_sample, report=report, require_image=cfg.require_image,
                           image_root=cfg.image_root, prompts=True)[: cfg.limit]
    max_length = cfg.max_length or default_max_length(teacher)
    samples = [s for s in samples if _usable(teacher, s, max_length, cfg.on_bad_sample, report)]
    if not samples:
        raise DataError(cfg.data, None, BAD_FILE, f"no usable prompts ({report.summary()})")
    out = Path(cfg.out)
    manifest = check_manifest(out, _settings(cfg, teacher, samples, dtype, max_length))
    batches = [list(range(i, min(i + cfg.batch_size, len(samples)))) for i in range(0, len(samples), cfg.batch_size)]
    todo = [k for k in range(len(batches)) if not part_path(out, k).exists()]
    bar = tqdm(total=len(samples), initial=len(samples) - sum(len(batches[k]) for k in todo), desc="answer",
               disable=not progress)
    stops = _stop_ids(teacher, samples[0])
    for k in todo:
        rows = generate(teacher, [samples[i] for i in batches[k]], cfg.max_new_tokens, max_length, stops)
        write_part(out, k, [{"sample": i, **row} for i, row in zip(batches[k], rows)])
        bar.update(len(batches[k]))
    bar.close()
    return write_dataset(out, samples, read_parts(out, len(batches)), teacher.tokenizer, report, manifest)


def _usable(teacher: LoadedVLM, sample: Sample, max_length: int, on_bad: str, report: SkipReport) -> bool:
    """Whether the teacher's processor renders the prompt (bad ones raise or are counted)."""
    try:
        encode_prompt(teacher.processor, sample, None, max_length, teacher.image_token_id)
        return True
    except DataError as err:
        if on_bad == "error":
            raise
        report.add(err)
        return False


@torch.no_grad()
def generate(teacher: LoadedVLM, samples: list[Sample], max_new_tokens: int, max_length: int,
             stops: list[int]) -> list[dict]:
    """Greedy answers to one batch of prompts: `[{"ids": [...], "truncated": bool}, ...]`, ids without
    the stop token (`truncated`: no stop token within max_new_tokens)."""
    encs = [encode_prompt(teacher.processor, s, load_images(s), max_length, teacher.image_token_id) for s in samples]
    batch = _left_padded(collate(encs, teacher.tokenizer.pad_token_id), [e.length for e in encs])
    model = teacher.model
    batch = {k: v.to(model.device) for k, v in batch.items()}
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops or None,
                         pad_token_id=teacher.tokenizer.pad_token_id)
    rows = []
    for new in out[:, batch["input_ids"].shape[1]:].tolist():
        end = next((j for j, t in enumerate(new) if t in stops), None)
        rows.append({"ids": new[:end], "truncated": end is None})
    return rows


def _left_padded(batch: dict, lengths: list[int]) -> dict:
    """collate()'s right-padded batch with every per-token row rolled to the right (left padding),
    as generation needs; image tensors unchanged."""
    batch = {k: v for k, v in batch.items() if k not in ("answer_start", "answer_end")}
    width = batch["input_ids"].shape[1]
    for key in SEQUENCE_KEYS:  # input_ids, attention_mask and per-token types
        if key in batch:
            batch[key] = torch.stack([row.roll(width - n) for row, n in zip(batch[key], lengths)])
    return batch


def _stop_ids(teacher: LoadedVLM, sample: Sample) -> list[int]:
    """Token ids that end an answer: the generation config's and tokenizer's eos, and the first token
    of the chat template's end-of-turn marker."""
    eos = teacher.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {teacher.tokenizer.eos_token_id}
    probe = Sample(sample.images, sample.question_messages + [{"role": ASSISTANT, "content": "x"}],
                   sample.source, sample.index)
    try:
        suffix = (end_of_turn(teacher.processor, probe) or "").strip()
    except DataError:
        suffix = ""
    if suffix:
        ids.add(teacher.tokenizer(suffix, add_special_tokens=False)["input_ids"][0])
    return sorted(i for i in ids if i is not None)


def _settings(cfg: AnswerConfig, teacher: LoadedVLM, samples: list[Sample], dtype: str, max_length: int) -> dict:
    """What the answers depend on; a resume must match all of it."""
    return {"teacher": _where(cfg.teacher), "teacher_weights": _weights_stamp(cfg.teacher), "dtype": dtype,
            "batch_size": cfg.batch_size, "max_new_tokens": cfg.max_new_tokens, "max_length": max_length,
            "prompts": len(samples), "prompts_sha256": prompts_digest(samples), "data": _where(cfg.data),
            "limit": cfg.limit}


def _where(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def _weights_stamp(path: str) -> str:
    """sha256 over the teacher dir's config and weight files' names, sizes and mtimes ('' for a hub id)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return ""
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".json"))
    return hashlib.sha256(str([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]).encode()).hexdigest()
