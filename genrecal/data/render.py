"""Render a sample with a model's own processor and chat template, and locate the answer span.

The "question" is everything the chat template emits before the assistant's reply (template and
image tokens included); the "answer" is the reply plus its end-of-turn token, in that model's
tokenizer. The span is located exactly on token ids and checked, never guessed. A system turn is
rendered by the model's own template; a template that drops or refuses it is a `no_system_role`
DataError. Anything the template or processor refuses is a DataError naming file, record and
turn, never a traceback.

The messages' text (system, questions, answers) is user text (`genrecal.user_text`, the rule every
runtime follows): control-token text in it (`<|im_end|>` inside an answer) is encoded as plain text,
so only the chat template writes turn markers and end-of-sequence ids. The rendered strings carry
user_text's marks until they are encoded; `Encoded.prompt_text`/`answer_text` are without them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from genrecal import user_text
from genrecal.data.errors import NO_ANSWER_SPAN, NO_IMAGE_TOKEN, NO_SYSTEM_ROLE, PROCESSOR_ERROR, TOO_LONG
from genrecal.data.records import SYSTEM
from genrecal.data.samples import DataError, Sample
from genrecal.images import ImageError, open_image

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


def sample_error(sample: Sample, reason: str, detail: str) -> DataError:
    """A DataError naming the sample's file, record and turn."""
    return DataError(sample.source, sample.index, reason, detail, sample.turn)


def load_images(sample: Sample) -> list[Image.Image]:
    """The sample's images by `genrecal.images.open_image` (the rule every runtime uses): RGB."""
    images = []
    for path in sample.images:
        try:
            images.append(open_image(path))
        except ImageError as err:
            raise sample_error(sample, err.reason, f"{path}: {err}") from None
    return images


def generation_prompt(processor, sample: Sample) -> str:
    """The rendered question, ending with the generation prompt (what the model answers from); its
    user text marked (`user_text.mark`)."""
    prompt = _chat(processor, sample, sample.question_messages, add_generation_prompt=True)
    system = sample.messages[0]["content"].strip() if sample.messages[0]["role"] == SYSTEM else ""
    if system and system not in user_text.unmark(prompt):
        raise sample_error(sample, NO_SYSTEM_ROLE, "this model's chat template has no system role (it drops "
                           "the system turn); remove the system turn or use a model whose template has one")
    return prompt


def prompt_and_answer(processor, sample: Sample) -> tuple[str, str]:
    """The rendered question (ending with the generation prompt) and the answer text after it (user
    text marked: `user_text.unmark` gives the plain text)."""
    prompt = generation_prompt(processor, sample)
    full = _chat(processor, sample, sample.messages)
    if not full.startswith(prompt):
        raise sample_error(sample, NO_ANSWER_SPAN,
                           "the chat template renders the conversation differently from its generation prompt")
    return prompt, full[len(prompt):].rstrip()


def control_tokens(processor) -> tuple[str, ...]:
    """The processor's control tokens under its chat template (`user_text.hf_control_tokens`)."""
    tok = getattr(processor, "tokenizer", processor)
    return user_text.hf_control_tokens(tok, getattr(processor, "chat_template", None) or tok.chat_template)


def _marked(messages: list[dict], control: tuple[str, ...]) -> list[dict]:
    return [{**msg, "content": [{**part, "text": user_text.mark(part["text"], control)} if part["type"] == "text"
                                else part for part in msg["content"]]} for msg in messages]


def _chat(processor, sample: Sample, messages: list[dict], **kwargs) -> str:
    try:
        marked = _marked(to_messages(messages), control_tokens(processor))
        return processor.apply_chat_template(marked, tokenize=False, **kwargs)
    except Exception as exc:  # jinja2's TemplateError (a template's raise_exception), TypeError, ...
        has_system = messages[0]["role"] == SYSTEM
        reason = NO_SYSTEM_ROLE if has_system else PROCESSOR_ERROR
        what = "this model's chat template refuses the system turn" if has_system else "the chat template failed"
        raise sample_error(sample, reason, f"{what} ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def render(processor, sample: Sample, images: list[Image.Image] | None = None, max_length: int = 2048,
           image_token_id: int | None = None) -> Encoded:
    """Tokenise one sample with `processor` and find the exact answer span.

    images: the sample's opened images (default: `load_images(sample)`). Raises DataError (file,
    record, turn): no_system_role, no_answer_span, too_long (over `max_length` tokens),
    no_image_token (the template dropped the image), processor_error, or an image reason.
    """
    images = load_images(sample) if images is None else images
    prompt, answer = prompt_and_answer(processor, sample)
    enc = _process(processor, sample, prompt + answer, images)
    ids = enc.pop("input_ids")[0]
    tok = getattr(processor, "tokenizer", processor)
    try:
        answer_ids = user_text.hf_encode(tok, answer, control_tokens(processor))
    except user_text.UserTextError as exc:
        raise sample_error(sample, PROCESSOR_ERROR, str(exc)) from None
    start = ids.shape[0] - len(answer_ids)
    if not answer_ids or ids[start:].tolist() != answer_ids:
        start = int(_process(processor, sample, prompt, images)["input_ids"].shape[1])  # slow path
        if start >= ids.shape[0]:
            raise sample_error(sample, NO_ANSWER_SPAN, f"answer {answer!r} is not found in the rendered ids")
    return _encoded(sample, ids, enc, start, max_length, bool(images), image_token_id, user_text.unmark(prompt),
                    user_text.unmark(answer))


def encode_prompt(processor, sample: Sample, images: list[Image.Image] | None = None, max_length: int = 2048,
                  image_token_id: int | None = None) -> Encoded:
    """Tokenise the sample's question alone, ending with the generation prompt (the input a model
    generates the answer from): answer_start == answer_end == its length. Raises DataError as `render`."""
    images = load_images(sample) if images is None else images
    prompt = generation_prompt(processor, sample)
    enc = _process(processor, sample, prompt, images)
    ids = enc.pop("input_ids")[0]
    return _encoded(sample, ids, enc, int(ids.shape[0]), max_length, bool(images), image_token_id,
                    user_text.unmark(prompt), "")


def _encoded(sample: Sample, ids: torch.Tensor, enc: dict, start: int, max_length: int, has_images: bool,
             image_token_id: int | None, prompt: str, answer: str) -> Encoded:
    """Check the rendered ids (length, image token) and wrap them with the processor's other outputs."""
    if ids.shape[0] > max_length:
        raise sample_error(sample, TOO_LONG, f"{ids.shape[0]} tokens > max_length {max_length} (raise it with "
                           "--max-length)")
    if has_images and image_token_id is not None and not bool((ids == image_token_id).any()):
        raise sample_error(sample, NO_IMAGE_TOKEN,
                           "the rendered prompt has no image token: the chat template dropped the image")
    extras = {k: v[0] if k in SEQUENCE_KEYS else v for k, v in enc.items() if isinstance(v, torch.Tensor)}
    extras.pop("attention_mask", None)
    return Encoded(ids, start, int(ids.shape[0]), extras, prompt, answer)


def _process(processor, sample: Sample, text: str, images: list[Image.Image]) -> dict:
    try:
        return user_text.process(processor, text, images, control_tokens(processor), return_tensors="pt")
    except user_text.UserTextError as exc:
        raise sample_error(sample, PROCESSOR_ERROR, str(exc)) from None
    except Exception as exc:  # processors raise ValueError, TypeError, IndexError, ... on input they refuse
        raise sample_error(sample, PROCESSOR_ERROR, f"the processor refused the sample with {len(images)} image(s) "
                           f"({type(exc).__name__}: {_first_line(exc)})") from None


def collate(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encodings into a batch -> input_ids/attention_mask [B, L] (+ per-token
    extras such as mm_token_type_ids, zero for samples without them) and the image tensors of
    the samples that have images, concatenated on dim 0 in sample order (text-only samples
    contribute none, so text-only and image samples share a batch)."""
    length = max(it.length for it in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    for i, it in enumerate(items):
        ids[i, : it.length] = it.input_ids
        mask[i, : it.length] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    for key in dict.fromkeys(k for it in items for k in it.extras):
        present = [it.extras[key] for it in items if key in it.extras]
        if key in SEQUENCE_KEYS:
            batch[key] = _pad_sequences([it.extras.get(key) for it in items], length, present[0].dtype)
        else:
            batch[key] = _cat_padded(present)
    batch["answer_start"] = torch.tensor([it.answer_start for it in items])
    batch["answer_end"] = torch.tensor([it.answer_end for it in items])
    return batch


def _pad_sequences(values: list[torch.Tensor | None], length: int, dtype: torch.dtype) -> torch.Tensor:
    out = torch.zeros((len(values), length), dtype=dtype)
    for i, v in enumerate(values):
        if v is not None:
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
