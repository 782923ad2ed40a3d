"""What user text becomes: text tokens, in every runtime and in training data.

    from genrecal import user_text
    control = user_text.hf_control_tokens(tokenizer, template)
    chat = render(template, question=user_text.mark(question, control))    # the chat template, as usual
    enc = user_text.process(processor, chat, images, control)             # torch / ONNX inputs

The rule is transformers' own (`apply_chat_template(..., sanitize_control_tokens=True)`, transformers
5.23): the *control tokens* are the tokenizer's special tokens plus the added tokens the chat template
writes itself; where one of them appears in user text (a question, a system turn, an answer in training
data), it is encoded as plain text, so only the template writes turn markers, end-of-sequence tokens
and image placeholders. How: user text is marked before the template renders it (each control token
wrapped in two private-use characters, `mark`); the rendered chat is split at the marks (`pieces`);
marked pieces are encoded without added tokens, the rest normally (`encode_pieces`, a port of
transformers' `encode_marked_chat`, so llama.cpp's tokenizer runs the same algorithm as the HF one).
A marked piece that the tokenizer still turns into a control token (a vocabulary that holds it as an
ordinary piece) is refused with one line (`UserTextError`), as transformers refuses it.

Why not `processor(..., sanitize_control_tokens=True)` itself: Idefics3's processor does not take it
(it counts marked `<image>` text as images and needs offsets the marked encoding does not give), so
`process` lets the processor expand the template's image placeholders with the user's control tokens
replaced by same-length stand-ins, then encodes the expanded chat itself. Prompts without control-token
text (almost all) go through the processor untouched.

Pure Python + regex (jinja2 for template literals); no torch, no transformers, no llama.cpp.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Iterable

from genrecal.errors import GenrecalError

MARK_START, MARK_END = "\U000f0000", "\U000f0001"  # transformers.utils.chat_template_utils' markers
STAND_IN = "\U000f0002"  # what the processor sees in place of a marked control token (never a token)


class UserTextError(GenrecalError):
    """User text that this model's tokenizer cannot keep as text, or a processor that cannot keep it."""


# ---- which tokens are control tokens ----
def template_literals(template: str | None) -> str:
    """The template's literal text and string constants, joined by NULs (transformers'
    `_get_template_literal_text`): an added token found here is one the template writes itself."""
    if not template:
        return ""
    from jinja2 import nodes
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ast = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except TemplateError:  # e.g. transformers' {% generation %} tag: the raw text is a superset
        return template
    literals = {n.data for n in ast.find_all(nodes.TemplateData)}
    literals |= {n.value for n in ast.find_all(nodes.Const) if isinstance(n.value, str)}
    return "\0".join(sorted(literals))


def control_tokens(added: Iterable[tuple[str, bool]], template: str | None) -> tuple[str, ...]:
    """transformers' rule over (content, special) of the added tokens: the special ones, plus those the
    template writes (whitespace tokens excepted: templates hold them as ordinary text)."""
    literal = template_literals(template)
    return tuple(sorted({c for c, special in added
                         if c and (special or (c in literal and not c.isspace()))}))


def hf_control_tokens(tokenizer, template: str | None) -> tuple[str, ...]:
    """The control tokens of a transformers tokenizer under `template` (transformers' own function
    where it has one, which also honours `tokenizer.chat_control_tokens`)."""
    own = getattr(tokenizer, "_get_control_tokens", None)
    if own is not None:
        return tuple(sorted(own(template or "")))
    return control_tokens(((t.content, t.special) for t in tokenizer.added_tokens_decoder.values()), template)


@lru_cache(maxsize=32)
def _patterns(control: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    longest_first = "|".join(map(re.escape, sorted(control, key=len, reverse=True))) or "(?!)"
    return (re.compile(longest_first),
            re.compile(f"{MARK_START}({longest_first}){MARK_END}|[{MARK_START}{MARK_END}]"))


# ---- marking and splitting ----
def split_tokens(text: str, tokens: Iterable[str]) -> list[str]:
    """`text` cut at each of `tokens` (longest first): [text, token, text, ..., text]."""
    return re.split(f"({_patterns(tuple(tokens))[0].pattern})", text)


def mark(text: str, control: Iterable[str]) -> str:
    """User text with each control token wrapped in the markers (markers already in it are dropped,
    so none can be forged)."""
    return _patterns(tuple(control))[0].sub(lambda m: MARK_START + m.group() + MARK_END, unmark(text))


def unmark(text: str) -> str:
    return text.replace(MARK_START, "").replace(MARK_END, "")


def is_marked(text: str) -> bool:
    return MARK_START in text or MARK_END in text


def pieces(chat: str, control: Iterable[str]) -> list[tuple[str, bool, bool]]:
    """The rendered chat as [(text, as_text, after_mark)]: marked control tokens (as_text) and the text
    between them, in order; lone markers (a template that split a marked token) only break the text.
    after_mark: the piece follows a mark, so it is encoded after a newline (see `encode_pieces`)."""
    parts = _patterns(tuple(control))[1].split(chat)
    out = [(parts[0], False, False)]
    for i, piece in enumerate(parts[1:], start=1):
        if piece:
            out.append((piece, i % 2 == 1, True))
    return out


def split_at(parts: list[tuple[str, bool, bool]], placeholder: str) -> list[list[tuple[str, bool, bool]]]:
    """Pieces cut at each placeholder the template wrote (never one inside marked user text):
    n_placeholders + 1 lists of pieces. The text right after a placeholder is not after a mark."""
    segments: list[list[tuple[str, bool, bool]]] = [[]]
    for text, as_text, after_mark in parts:
        if as_text or placeholder not in text:
            segments[-1].append((text, as_text, after_mark))
            continue
        for j, sub in enumerate(text.split(placeholder)):
            if j:
                segments.append([])
            if sub:
                segments[-1].append((sub, False, after_mark and j == 0))
    return segments


# ---- encoding ----
Encode = Callable[[str], list]


def encode_pieces(parts: list[tuple[str, bool, bool]], encode: Encode, encode_as_text: Encode,
                  newline_ids: list[int], control_ids: Iterable[int]) -> list[int]:
    """transformers' `encode_marked_chat`: marked pieces without added tokens, the rest with them; a piece
    after a mark is encoded after "\\n" (then the newline ids dropped) so a SentencePiece-style tokenizer
    adds no word-start prefix mid-text. Raises UserTextError if a marked piece still gives a control id."""
    control_ids = set(control_ids)
    ids: list[int] = []
    for text, as_text, after_mark in parts:
        enc = encode_as_text if as_text else encode
        if after_mark:
            got = list(enc("\n" + text))
            got = got[len(newline_ids):] if newline_ids and got[:len(newline_ids)] == newline_ids else list(enc(text))
        else:
            got = list(enc(text)) if text else []
        if as_text and control_ids.intersection(got):
            raise UserTextError(f"the prompt contains {text!r}, which this model's tokenizer turns into its control "
                                "token even as plain text (its vocabulary holds it as an ordinary piece): remove it")
        ids += got
    return ids


def hf_encode(tokenizer, chat: str, control: Iterable[str]) -> list[int]:
    """`encode_pieces` with a transformers tokenizer (no special tokens added, as chat templates write them)."""
    control = tuple(control)

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    as_text = getattr(tokenizer, "_encode_without_added_tokens", None) or (
        lambda text: tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))
    return encode_pieces(pieces(chat, control), encode, as_text, encode("\n"), hf_control_ids(tokenizer, control))


def hf_control_ids(tokenizer, control: Iterable[str]) -> set[int]:
    """The ids of the control tokens, less the unknown token's (plain text legitimately gives it for
    characters the vocabulary lacks)."""
    return set(tokenizer.convert_tokens_to_ids(list(control))) - {tokenizer.unk_token_id}


# ---- a transformers processor ----
def process(processor, chat: str, images: list, control: Iterable[str], return_tensors: str = "np") -> dict:
    """processor(text=[chat], images=[images]) with marked user text kept as text.

    Unmarked chats go through the processor as they are. Otherwise the processor sees each marked
    control token as same-length stand-ins (so only the template's image placeholders expand and count),
    reports where it expanded them (`return_text_replacement_offsets`), and the expanded chat, marks
    restored, is encoded by `hf_encode`; the per-token arrays follow the new ids. Checked: the new ids
    hold exactly the control tokens the processor's ids hold (template + image expansions)."""
    kwargs = {"images": [images]} if images else {}
    if not is_marked(chat):
        return dict(processor(text=[chat], return_tensors=return_tensors, **kwargs))
    control = tuple(control)
    tokenizer = getattr(processor, "tokenizer", processor)
    shown = _patterns(control)[1].sub(lambda m: STAND_IN * len(m.group()), chat)
    enc = dict(processor(text=[shown], return_tensors=return_tensors, return_text_replacement_offsets=True, **kwargs))
    offsets = enc.pop("text_replacement_offsets", None)
    if offsets is None and images:
        raise UserTextError(f"the {type(processor).__name__} does not report where it expands image placeholders, so "
                            "control-token text in the prompt cannot be kept as text: remove it")
    expanded, last = [], 0
    for item in (list(offsets[0]) if offsets is not None and len(offsets) else []):  # a list, or numpy's
        start, end = item["span"]
        if shown[start:end] != item["text"]:
            raise UserTextError(f"the {type(processor).__name__} changed the text before expanding images, so "
                                "control-token text in the prompt cannot be kept as text: remove it")
        expanded += [chat[last:start], item["replacement"]]
        last = end
    ids = hf_encode(tokenizer, "".join(expanded) + chat[last:], control)
    before = enc["input_ids"]
    control_ids = hf_control_ids(tokenizer, control)
    if sorted(i for i in _as_list(before) if i in control_ids) != sorted(i for i in ids if i in control_ids):
        raise UserTextError(f"the {type(processor).__name__} lays out this prompt's control-token text differently "
                            "from its template, so it cannot be kept as text: remove it")
    enc["input_ids"] = _like(before, [ids])
    if "attention_mask" in enc:
        enc["attention_mask"] = _like(enc["attention_mask"], [[1] * len(ids)])
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in enc and hasattr(processor, "create_mm_token_type_ids"):
            enc[key] = _like(enc[key], processor.create_mm_token_type_ids([ids]))
    return enc


def _as_list(batch) -> list[int]:
    row = batch[0]
    return [int(i) for i in (row.tolist() if hasattr(row, "tolist") else row)]


def _like(template, rows: list[list[int]]):
    """rows as the same kind of batch as `template` (numpy array, torch tensor or list)."""
    if hasattr(template, "new_tensor"):  # torch
        return template.new_tensor(rows)
    if hasattr(template, "dtype"):  # numpy
        import numpy as np

        return np.asarray(rows, dtype=template.dtype)
    return [list(r) for r in rows]
