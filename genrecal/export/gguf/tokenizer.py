"""The tokenizer and chat template, written into the text GGUF so llama.cpp needs nothing else.

Byte-level BPE (`tokenizers` BPE + ByteLevel) is llama.cpp's `gpt2` tokenizer model; its vocabulary
is already in the byte-to-unicode alphabet, so tokens and merges are copied as they are (merges
joined with a space). `tokenizer.ggml.pre` names the pre-tokenizer regex llama.cpp must apply —
without it llama.cpp falls back to 'default' and splits text differently from HF. Special added
tokens are typed CONTROL (else llama.cpp tokenises "<|im_start|>" as plain text).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
from jinja2.exceptions import TemplateError

from genrecal.export.gguf.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import render_chat

T = gguf.TokenType
# pre-tokenizer regexes of Split+ByteLevel tokenizers -> llama.cpp's pre-tokenizer name; Qwen2 and Llama 3
# differ only in how digits group (Qwen2: one digit per piece, Llama 3: up to three); Qwen3.5 also keeps
# combining marks (\p{M}) inside words (transformers' Qwen3_5Tokenizer regex = llama.cpp's `qwen35`)
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_REGEX = {_WORDS + r"\p{N}" + _REST: "qwen2", _WORDS + r"\p{N}{1,3}" + _REST: "llama-bpe", _QWEN35: "qwen35"}


@dataclass(frozen=True)
class TokenizerFacts:
    """What the manifest and the parity check need to know about the written tokenizer."""

    pre: str
    n_tokens: int
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool


def pre_tokenizer_name(pre: dict | None) -> str:
    """llama.cpp's name for a tokenizers pre_tokenizer config, or GgufExportError."""
    kind = (pre or {}).get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if kind == "Sequence":
        parts = pre["pretokenizers"]
        types = [p["type"] for p in parts]
        if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
            return "smollm"
        if types == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
            regex = parts[0].get("pattern", {}).get("Regex")
            if regex in _SPLIT_REGEX:
                return _SPLIT_REGEX[regex]
    raise GgufExportError(f"pre-tokenizer {json.dumps(pre)[:200]} has no llama.cpp equivalent known to genrecal "
                          "(supported: GPT-2 ByteLevel, SmolLM digits+ByteLevel, Qwen2, Qwen3.5 and Llama-3 Split regexes)")


def _token_table(tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    vocab = tokenizer.get_vocab()  # str -> id, added tokens included
    if max(vocab.values()) >= n_vocab:
        raise GgufExportError(f"tokenizer has ids up to {max(vocab.values())} but the model embeds only {n_vocab}")
    tokens: list[str | None] = [None] * n_vocab
    for text, idx in vocab.items():
        tokens[idx] = text
    added = {idx: tok for idx, tok in tokenizer.added_tokens_decoder.items()}
    types = []
    for idx, text in enumerate(tokens):
        if text is None:  # embedding rows beyond the tokenizer (padding for alignment)
            tokens[idx] = f"[PAD{idx}]"
            types.append(T.UNUSED)
        elif idx in added:
            types.append(T.CONTROL if added[idx].special else T.USER_DEFINED)
        else:
            types.append(T.NORMAL)
    return tokens, types


def _adds(tokenizer, token_id: int | None, first: bool) -> bool:
    """Does the HF tokenizer itself add this special token when encoding text?"""
    if token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0 if first else -1] == token_id


def add_tokenizer(w: gguf.GGUFWriter, tokenizer, n_vocab: int) -> TokenizerFacts:
    """Write vocab, merges, token types, special ids and add_bos/add_eos into `w`."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE" or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise GgufExportError(f"tokenizer model {model.get('type')!r}: only byte-level BPE is written to GGUF "
                              "(llama.cpp cannot match cased WordPiece; Unigram is not implemented here)")
    pre = pre_tokenizer_name(data.get("pre_tokenizer"))
    tokens, types = _token_table(tokenizer, n_vocab)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_merges(merges)
    facts = TokenizerFacts(pre=pre, n_tokens=len(tokens), bos_id=tokenizer.bos_token_id,
                           eos_id=tokenizer.eos_token_id, add_bos=_adds(tokenizer, tokenizer.bos_token_id, True),
                           add_eos=_adds(tokenizer, tokenizer.eos_token_id, False))
    for value, add in ((facts.bos_id, w.add_bos_token_id), (facts.eos_id, w.add_eos_token_id),
                       (tokenizer.pad_token_id, w.add_pad_token_id), (tokenizer.unk_token_id, w.add_unk_token_id)):
        if value is not None:
            add(int(value))
    w.add_add_bos_token(facts.add_bos)
    w.add_add_eos_token(facts.add_eos)
    return facts


def read_chat_template(hf_dir: Path, tokenizer) -> str:
    """transformers 5 saves the template as chat_template.jinja; older dirs keep it in a json."""
    path = Path(hf_dir) / "chat_template.jinja"
    if path.is_file():
        return path.read_text()
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        return template
    legacy = Path(hf_dir) / "chat_template.json"
    if legacy.is_file():
        return json.loads(legacy.read_text())["chat_template"]
    raise GgufExportError(f"{hf_dir} has no chat template (chat_template.jinja): the runtime needs one")


def check_chat_template(template: str, image_placeholder: str) -> None:
    """The template must loop over list content: image parts -> the placeholder, text parts -> text.

    llama-cpp-python's MTMDChatHandler turns image parts into text parts holding its media marker,
    and genrecal's runtime substitutes the placeholder; both need per-part rendering.
    """
    probe = "genrecal-probe-7f3a"
    content = [{"type": "image"}, {"type": "text", "text": probe}]
    try:
        text = render_chat(template, [{"role": "user", "content": content}], bos_token="", eos_token="")
    except TemplateError as exc:
        raise GgufExportError(f"chat template does not render list content: {exc}") from None
    if probe not in text or text.count(image_placeholder) != 1:
        raise GgufExportError(
            f"chat template must render each content part (text parts as text, image parts as "
            f"{image_placeholder!r}); it rendered {text!r}")


def add_chat_template(w: gguf.GGUFWriter, template: str, image_placeholder: str) -> None:
    check_chat_template(template, image_placeholder)
    w.add_chat_template(template)


# ---- llama.cpp's own clients (llama-cpp-python's MTMDChatHandler, llama-mtmd-cli, llama-server) ----
MEDIA_MARKER = "<__media__>"  # libmtmd's default media marker (mtmd_default_marker())
CLIENT_PROBE = "What colour is the shape?"


def has_single_token(tokenizer, text: str) -> bool:
    """Does the vocabulary hold a token whose text is exactly `text` (what libmtmd's lookup_token finds)?"""
    vocab = tokenizer.get_vocab()
    if text in vocab:  # added / special tokens are stored as their text
        return True
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) == 1 and tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text:
        return True
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_map = bytes_to_unicode()  # byte-level BPE spells each byte as one printable character
    return "".join(byte_map[b] for b in text.encode("utf-8")) in vocab


def check_libmtmd_tokens(tokenizer, lookups: tuple[str, ...], projector: str) -> None:
    """Refuse (one line) a vocabulary without a token libmtmd looks up by text for this projector."""
    missing = [t for t in lookups if not has_single_token(tokenizer, t)]
    if missing:
        raise GgufExportError(
            f"the tokenizer has no single token for {', '.join(repr(t) for t in missing)}, which llama.cpp's "
            f"libmtmd looks up for the {projector} projector: llama-mtmd-cli would abort (GGML_ASSERT(idx >= 0)) "
            "and llama-cpp-python's MTMDChatHandler fail to decode (llama.cpp #27190); real vocabularies have it, "
            "so build the student from one that does (genrecal's zoo adds it, TokenizerSpec.whole_tokens)")


def client_renders(template: str, placeholder: str, question: str = CLIENT_PROBE, bos: str = "",
                   eos: str = "") -> dict[str, str]:
    """One user turn (an image, then `question`) as each llama.cpp client renders it, the image as libmtmd's
    marker: genrecal and the HF processor pass an {"type": "image"} part (the template writes `placeholder`);
    MTMDChatHandler turns an image_url part into a text part holding the marker; llama-server and
    llama-mtmd-cli (--jinja) pass the string marker + question (a typed-only template gets it as one text part)."""
    def render(content):
        return render_chat(template, [{"role": "user", "content": content}], bos_token=bos, eos_token=eos)

    out = {"hf": render([{"type": "image"}, {"type": "text", "text": question}]).replace(placeholder, MEDIA_MARKER),
           "mtmd_chat_handler": render([{"type": "text", "text": MEDIA_MARKER}, {"type": "text", "text": question}])}
    try:
        out["server_cli"] = render(MEDIA_MARKER + question)
    except (TemplateError, TypeError, KeyError):
        out["server_cli"] = render([{"type": "text", "text": MEDIA_MARKER + question}])
    return out


def check_client_template(template: str, placeholder: str, bos: str = "", eos: str = "") -> list[str]:
    """Can llama.cpp's clients apply this chat template to one image + a question? Raises GgufExportError (one
    line) where a client would lose the image or the question; returns notes on what differs (recorded in the
    manifest): a client whose prompt text differs from the HF processor's, llama.cpp's built-in templates."""
    try:
        renders = client_renders(template, placeholder, bos=bos, eos=eos)
    except TemplateError as exc:
        raise GgufExportError(f"llama.cpp's clients cannot apply the chat template to an image and a question "
                              f"(they pass the image as a text part or string holding {MEDIA_MARKER!r}): {exc}") from None
    for client, text in renders.items():
        if text.count(MEDIA_MARKER) != 1 or CLIENT_PROBE not in text:
            raise GgufExportError(f"chat template loses the image or the question when {_CLIENTS[client]} applies "
                                  f"it (the image as {MEDIA_MARKER!r}): it rendered {text!r}")
    notes = [f"{_CLIENTS[c]} renders the prompt as {renders[c]!r} where the HF processor (and genrecal's runtime) "
             f"has {renders['hf']!r}: its answers can differ" for c in ("mtmd_chat_handler", "server_cli")
             if renders[c] != renders["hf"]]
    builtin = builtin_template(template)
    if builtin is None:
        notes.append("llama.cpp's built-in chat templates do not recognise this one: llama-mtmd-cli needs --jinja "
                     "(llama-server uses its jinja engine by default)")
    elif builtin != renders["server_cli"]:
        notes.append(f"without --jinja llama-mtmd-cli formats with a built-in template: {builtin!r}")
    return notes


_CLIENTS = {"hf": "genrecal's runtime", "mtmd_chat_handler": "llama-cpp-python's MTMDChatHandler",
            "server_cli": "llama-server / llama-mtmd-cli --jinja"}


def builtin_template(template: str, question: str = CLIENT_PROBE) -> str | None:
    """The user turn as llama.cpp's built-in (non-jinja) template engine formats it (llama_chat_apply_template,
    what llama-mtmd-cli uses without --jinja), or None where llama.cpp does not recognise the template (or
    llama-cpp-python is not installed)."""
    try:
        import ctypes

        import llama_cpp
    except ImportError:
        return None
    msg = (llama_cpp.llama_chat_message * 1)(llama_cpp.llama_chat_message(b"user", (MEDIA_MARKER + question).encode()))
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_chat_apply_template(template.encode(), msg, 1, True, buf, len(buf))
    return None if n < 0 or n > len(buf) else buf.raw[:n].decode("utf-8", errors="replace")
