"""Render a sample with a model's own processor and chat template, and locate the answer span.

The "question" is everything the chat template emits before the assistant's reply (template and
image tokens included); the "answer" is the reply plus its end-of-turn token, in that model's
tokenizer. The span is located exactly on token ids and checked, never guessed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from genrecal.data.samples import DataError, Sample

SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


@dataclass
class Encoded:
    """One sample rendered for one model."""

    input_ids: torch.Tensor  # [L]
    answer_start: int  # index of the first answer token
    answer_end: int  # exclusive; the answer includes the end-of-turn token
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # pixel_values, image_grid_thw, ...
    prompt_text: str = ""
    answer_text: str = ""

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def to_messages(messages: list[dict]) -> list[dict]:
    """Chat messages with `<image>` placeholders -> list-content messages every template reads."""
    out = []
    for msg in messages:
        parts, pieces = [], msg["content"].split("<image>")
        for i, piece in enumerate(pieces):
            if i > 0:
                parts.append({"type": "image"})
            if piece.strip():
                parts.append({"type": "text", "text": piece.strip("\n")})
        out.append({"role": msg["role"], "content": parts})
    return out


def load_images(sample: Sample) -> list[Image.Image]:
    images = []
    for path in sample.images:
        try:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise DataError(sample.source, sample.index, "corrupt_image", f"{path}: {exc}") from None
    return images


def prompt_and_answer(processor, sample: Sample) -> tuple[str, str]:
    """The rendered question (ending with the generation prompt) and the answer text after it."""
    question = to_messages(sample.question_messages)
    prompt = processor.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(to_messages(sample.messages), tokenize=False)
    if not full.startswith(prompt):
        raise DataError(
            sample.source, sample.index, "no_answer_span",
            "the chat template renders the conversation differently from its generation prompt",
        )
    return prompt, full[len(prompt):].rstrip()


def render(processor, sample: Sample, images: list[Image.Image] | None = None, max_length: int = 2048,
           image_token_id: int | None = None) -> Encoded:
    """Tokenise one sample with `processor` and find the exact answer span."""
    images = load_images(sample) if images is None else images
    prompt, answer = prompt_and_answer(processor, sample)
    enc = _process(processor, prompt + answer, images)
    ids = enc.pop("input_ids")[0]
    tok = getattr(processor, "tokenizer", processor)
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    start = ids.shape[0] - len(answer_ids)
    if not answer_ids or ids[start:].tolist() != answer_ids:
        start = int(_process(processor, prompt, images)["input_ids"].shape[1])  # slow path: tokenise the prompt
        if start >= ids.shape[0]:
            raise DataError(sample.source, sample.index, "no_answer_span",
                            f"answer {answer!r} is not found in the rendered ids")
    if ids.shape[0] > max_length:
        raise DataError(sample.source, sample.index, "too_long",
                        f"{ids.shape[0]} tokens > max_length {max_length}")
    if images and image_token_id is not None and not bool((ids == image_token_id).any()):
        raise DataError(sample.source, sample.index, "no_image_token",
                        "the rendered prompt has no image token: the chat template dropped the image")
    extras = {k: v[0] if k in SEQUENCE_KEYS else v for k, v in enc.items() if isinstance(v, torch.Tensor)}
    extras.pop("attention_mask", None)
    return Encoded(ids, start, int(ids.shape[0]), extras, prompt, answer)


def _process(processor, text: str, images: list[Image.Image]) -> dict:
    kwargs = {"images": [images]} if images else {}
    return dict(processor(text=[text], return_tensors="pt", **kwargs))


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encodings into a batch; image tensors are concatenated or padded."""
    length = max(it.length for it in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for i, it in enumerate(items):
        ids[i, : it.length] = it.input_ids
        mask[i, : it.length] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    for key in items[0].extras:
        values = [it.extras[key] for it in items]
        batch[key] = _pad_sequences(values, length) if key in SEQUENCE_KEYS else _cat_padded(values)
    batch["answer_start"] = torch.tensor([it.answer_start for it in items])
    batch["answer_end"] = torch.tensor([it.answer_end for it in items])
    return batch


def _pad_sequences(values: list[torch.Tensor], length: int) -> torch.Tensor:
    out = torch.zeros((len(values), length), dtype=values[0].dtype)
    for i, v in enumerate(values):
        out[i, : v.shape[0]] = v
    return out


def _cat_padded(values: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate on dim 0, zero-padding trailing dims that differ (e.g. Idefics3's image count)."""
    shape = [max(v.shape[d] for v in values) for d in range(1, values[0].dim())]
    padded = []
    for v in values:
        if list(v.shape[1:]) != shape:
            p = v.new_zeros((v.shape[0], *shape))
            p[(slice(None),) + tuple(slice(0, s) for s in v.shape[1:])] = v
            v = p
        padded.append(v)
    return torch.cat(padded, dim=0)
