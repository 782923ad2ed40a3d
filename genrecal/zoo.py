"""Tiny real-architecture VLMs, built offline.

`genrecal zoo build --family qwen2_vl --size tiny --out DIR` writes a transformers model dir (config +
safetensors + processor + a tokenizer trained here) that reloads with
``AutoModelForImageTextToText.from_pretrained(DIR)`` and ``AutoProcessor.from_pretrained(DIR)``.
Every family trains its own tokenizer (algorithm and vocabulary differ), so teacher/student pairs
are genuinely heterogeneous.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections import Counter
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast

from genrecal.families import get_family
from genrecal.families.base import TokenizerSpec
from genrecal.fsutil import atomic_dir

# General words beside easy-vqa's questions, so demo prompts are not all unknown pieces.
_GENERAL_TEXT = """
What is in the image? Describe the picture in one sentence. The image shows a shape.
Is there a circle, a rectangle or a triangle? What colour is it? Answer with one word.
The photo shows a person, a cat, a cup of coffee, an astronaut, a building, a dog and a tree.
Yes. No. I do not know. There are two objects on a white background.
"""


@functools.lru_cache(maxsize=4)
def corpus(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Lines to train the tiny tokenizers on: easy-vqa questions and answers + general text + `extra`
    (a task's own text, e.g. `genrecal.data.scenes.vocabulary_text()`)."""
    from easy_vqa import get_answers, get_train_questions

    questions, answers, _ = get_train_questions()
    lines = sorted(set(questions))[:4000] + list(get_answers())
    lines += [ln.strip() for ln in _GENERAL_TEXT.splitlines() if ln.strip()]
    return tuple(lines) + tuple(extra)


def train_tokenizer(spec: TokenizerSpec, padding_side: str = "right",
                    extra_text: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Train a small tokenizer of the family's algorithm and wrap it for transformers.

    Reproducible across processes (the same spec gives the same vocabulary everywhere), so a zoo
    model built twice with one seed is the same model.
    """
    specials = [t for t in (spec.unk, spec.pad, spec.bos, spec.eos) if t] + list(spec.special_tokens)
    specials = list(dict.fromkeys(specials))
    builders = {"bpe": _byte_level_bpe, "wordpiece": _wordpiece, "unigram": _unigram}
    if spec.algorithm not in builders:
        raise ValueError(f"unknown tokenizer algorithm {spec.algorithm!r} (bpe, wordpiece, unigram)")
    return wrap_tokenizer(builders[spec.algorithm](spec, specials, corpus(tuple(extra_text))), spec, padding_side)


def wrap_tokenizer(tok: Tokenizer, spec: TokenizerSpec, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """A `tokenizers` Tokenizer as transformers' fast tokenizer with the family's special tokens.

    Every special token of the spec is registered as a special added token (transformers keeps only the named
    ones when `extra_special_tokens` is given, which left InternVL's `<|im_start|>` an ordinary piece: user
    text could then produce it without genrecal's user-text rule seeing a control token)."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec.bos,
        eos_token=spec.eos,
        pad_token=spec.pad,
        unk_token=spec.unk,
        additional_special_tokens=[t for t in spec.special_tokens if t not in (spec.bos, spec.eos, spec.pad)],
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
        **({"extra_special_tokens": dict(spec.extra_special)} if spec.extra_special else {}),
    )
    special = {t.content for t in wrapped.added_tokens_decoder.values() if t.special}
    missing = [t for t in spec.special_tokens if t not in special]
    if missing:
        wrapped.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return wrapped


def _byte_level_bpe(spec: TokenizerSpec, specials: list[str], lines: tuple[str, ...]) -> Tokenizer:
    """GPT-2 style byte-level BPE (what llama.cpp calls "gpt2")."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return add_whole_tokens(tok, spec.whole_tokens)


def add_whole_tokens(tok: Tokenizer, texts: tuple[str, ...]) -> Tokenizer:
    """Byte-level BPE `tok` with each of `texts` as one ordinary token, as real vocabularies have it: the
    pieces `tok` splits it into are joined by merges appended after the trained ones (lowest priority), so
    only strings containing it tokenise differently, and llama.cpp (merges by rank, as HF) agrees.
    The trained vocabulary keeps its ids; each new token takes the next id."""
    data = json.loads(tok.to_str())
    vocab, merges = data["model"]["vocab"], data["model"]["merges"]
    added = 0
    for text in texts:
        words = tok.pre_tokenizer.pre_tokenize_str(text)
        if len(words) != 1:
            raise ValueError(f"whole token {text!r} is split by the pre-tokenizer ({words}); it cannot be one token")
        word = words[0][0]
        if word in vocab:
            continue
        pieces = [t.value for t in tok.model.tokenize(word)]
        current = pieces[0]
        for piece in pieces[1:]:
            merges.append([current, piece])
            current += piece
            if current not in vocab:
                vocab[current] = max(vocab.values()) + 1
                added += 1
    return Tokenizer.from_str(json.dumps(data)) if added else tok


def _word_counts(pre, lines: tuple[str, ...]) -> Counter:
    return Counter(w for line in lines for w, _ in pre.pre_tokenize_str(line))


def _top(counts: Counter, n: int, exclude) -> list[str]:
    """The n most frequent entries, ties broken alphabetically (reproducible)."""
    ranked = sorted((k for k in counts if k not in exclude), key=lambda k: (-counts[k], k))
    return ranked[:max(n, 0)]


def _wordpiece(spec: TokenizerSpec, specials: list[str], lines: tuple[str, ...]) -> Tokenizer:
    """Uncased WordPiece (BERT style) over a frequency-ranked vocabulary: every character (alone and
    as a "##" continuation), then the most frequent whole words. Built here rather than with
    tokenizers' WordPieceTrainer, whose vocabulary changes from process to process."""
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter({normalizer.normalize_str(w): n for w, n in _word_counts(pre, lines).items()})
    chars = sorted({c for w in words for c in w})
    base = specials + chars + [f"##{c}" for c in chars]
    vocab = base + _top(words, spec.vocab_size - len(base), set(base))
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token=spec.unk or "[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre, decoders.WordPiece()
    return tok


def _unigram(spec: TokenizerSpec, specials: list[str], lines: tuple[str, ...]) -> Tokenizer:
    """SentencePiece-style Unigram (metaspace): every character plus the most frequent substrings
    (up to 8 characters) of the corpus words, scored by log frequency; segmentation is Viterbi.
    Built here because tokenizers' UnigramTrainer is not reproducible across processes."""
    pre = pre_tokenizers.Metaspace()
    words = _word_counts(pre, lines)
    subs: Counter = Counter()
    for w, n in words.items():
        for i in range(len(w)):
            for j in range(i + 2, min(len(w), i + 8) + 1):
                subs[w[i:j]] += n
    chars = Counter({c: 1 for c in "\n"})  # chat templates use newlines; the corpus lines have none
    for w, n in words.items():
        for c in w:
            chars[c] += n
    pieces = sorted(chars) + _top(subs, spec.vocab_size - len(specials) - len(chars), set(chars))
    counts = {p: chars.get(p, 0) + subs.get(p, 0) for p in pieces}
    total = sum(counts.values())
    vocab = [(t, 0.0) for t in specials] + [(p, math.log(counts[p] / total)) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=specials.index(spec.unk), byte_fallback=False))
    tok.pre_tokenizer, tok.decoder = pre, decoders.Metaspace()
    return tok


def vocab_gguf_tokenizer(spec: TokenizerSpec, vocab_gguf: str | os.PathLike) -> PreTrainedTokenizerFast:
    """A real tokenizer from one of llama.cpp's vocab-only GGUFs (its models/ggml-vocab-*.gguf), with the
    family's special tokens added: what llama.cpp's converter recognises by its pre-tokenizer hash."""
    from transformers import AutoTokenizer

    path = Path(vocab_gguf)
    real = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tok = _name_placeholders(real.backend_tokenizer, spec.real_ids)
    tok.add_special_tokens([t for t in spec.special_tokens if t not in tok.get_vocab()])
    return wrap_tokenizer(tok, spec)


def _name_placeholders(tok: Tokenizer, real_ids: dict[str, int]) -> Tokenizer:
    """Give placeholder entries ("[PAD151655]", how llama.cpp's vocab GGUFs fill a padded vocabulary) the
    special token names a family's real checkpoints have at those ids; real entries are left alone."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    by_id = {entry["id"]: entry for entry in data["added_tokens"]}
    renamed = 0
    for name, idx in real_ids.items():
        entry = by_id.get(idx)
        if name in vocab or entry is None or entry["content"] != f"[PAD{idx}]":
            continue
        vocab[name] = vocab.pop(entry["content"])
        entry.update(content=name, special=True)
        renamed += 1
    return Tokenizer.from_str(json.dumps(data)) if renamed else tok


def build(family: str, size: str = "tiny", seed: int = 0, vocab_gguf: str | os.PathLike | None = None,
          extra_text: tuple[str, ...] = (), dtype: torch.dtype = torch.float32):
    """Build (model, processor) for a family in memory, seeded. vocab_gguf: a llama.cpp vocab-only GGUF
    whose real tokenizer replaces the locally trained one; extra_text: lines added to the corpus the
    local tokenizer is trained on (a task's own words; empty: the default zoo tokenizer); dtype: the
    weights' dtype, initialised in it (a 2B model built in bfloat16 never holds an fp32 copy)."""
    fam = get_family(family, role="zoo")
    if size not in fam.sizes:
        raise ValueError(f"family {family!r} has no zoo size {size!r}; sizes: {', '.join(fam.sizes)}")
    torch.manual_seed(seed)
    tokenizer = vocab_gguf_tokenizer(fam.tokenizer, vocab_gguf) if vocab_gguf else train_tokenizer(fam.tokenizer, extra_text=extra_text)
    tokenizer.chat_template = fam.chat_template
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model, processor = fam.build_tiny(size, tokenizer, seed)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(dtype)  # weights a size loads from a file (small-smollm2) come in their own dtype
    processor.chat_template = fam.chat_template
    return model.eval(), processor


def build_to_dir(family: str, out: str | os.PathLike, size: str = "tiny", seed: int = 0,
                 vocab_gguf: str | os.PathLike | None = None, extra_text: tuple[str, ...] = (),
                 dtype: torch.dtype = torch.float32) -> Path:
    """Build a zoo VLM and save it (model + processor) atomically to `out` (vocab_gguf, extra_text, dtype:
    see build)."""
    out = Path(out)
    model, processor = build(family, size, seed, vocab_gguf, tuple(extra_text), dtype)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "genrecal_zoo.json").write_text(json.dumps({"family": family, "size": size, "seed": seed}))
    return out


def teach_easy_vqa(src: str | os.PathLike, dst: str | os.PathLike, steps: int, batch: int = 8,
                   lr: float = 2e-3) -> Path:
    """Copy the zoo model `src` to `dst` and teach it easy-vqa answers: `steps` AdamW steps of `batch`
    questions, loss on the answer tokens only, seed 0, one torch thread (restored after). Gives a test or
    benchmark a student whose logits are not those of random weights."""
    import shutil

    from genrecal.data import load_easy_vqa_questions
    from genrecal.data.render import collate, render
    from genrecal.data.samples import Sample

    dst = Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    torch.manual_seed(0)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: more threads than free cores is far slower
    try:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model, proc = AutoModelForImageTextToText.from_pretrained(dst), AutoProcessor.from_pretrained(dst)
        data = load_easy_vqa_questions("train", limit=steps * batch, seed=0)
        items = [render(proc, Sample([Path(p)], [{"role": "user", "content": "<image>" + q},
                                                 {"role": "assistant", "content": a}], "easy-vqa", i))
                 for i, (q, a, p) in enumerate(data)]
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for step in range(steps):
            inputs = collate(items[step * batch:(step + 1) * batch], proc.tokenizer.pad_token_id)
            start, end = inputs.pop("answer_start"), inputs.pop("answer_end")
            labels = torch.full_like(inputs["input_ids"], -100)  # [B, L]: loss on the answer span only
            for i in range(len(start)):
                labels[i, start[i]:end[i]] = inputs["input_ids"][i, start[i]:end[i]]
            model(**inputs, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval().save_pretrained(dst)
    finally:
        torch.set_num_threads(old_threads)
    return dst
