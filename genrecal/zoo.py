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
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from genrecal.families import get_family
from genrecal.families.base import TokenizerSpec

# General words beside easy-vqa's questions, so demo prompts are not all unknown pieces.
_GENERAL_TEXT = """
What is in the image? Describe the picture in one sentence. The image shows a shape.
Is there a circle, a rectangle or a triangle? What colour is it? Answer with one word.
The photo shows a person, a cat, a cup of coffee, an astronaut, a building, a dog and a tree.
Yes. No. I do not know. There are two objects on a white background.
"""


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[str, ...]:
    """Lines to train the tiny tokenizers on: easy-vqa questions and answers + general text."""
    from easy_vqa import get_answers, get_train_questions

    questions, answers, _ = get_train_questions()
    lines = sorted(set(questions))[:4000] + list(get_answers())
    lines += [ln.strip() for ln in _GENERAL_TEXT.splitlines() if ln.strip()]
    return tuple(lines)


def train_tokenizer(spec: TokenizerSpec, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """Train a small tokenizer of the family's algorithm and wrap it for transformers."""
    specials = [t for t in (spec.unk, spec.pad, spec.bos, spec.eos) if t] + list(spec.special_tokens)
    specials = list(dict.fromkeys(specials))
    tok, trainer = _model_and_trainer(spec, specials)
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
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


def _model_and_trainer(spec: TokenizerSpec, specials: list[str]):
    if spec.algorithm == "bpe":  # byte-level BPE, GPT-2 style (what llama.cpp calls "gpt2")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
    elif spec.algorithm == "wordpiece":  # uncased WordPiece (BERT style)
        tok = Tokenizer(models.WordPiece(unk_token=spec.unk or "[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=spec.vocab_size, special_tokens=specials, show_progress=False)
    elif spec.algorithm == "unigram":  # SentencePiece-style unigram with the metaspace convention
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=spec.vocab_size, special_tokens=specials, unk_token=spec.unk, show_progress=False,
            initial_alphabet=["\n"],  # chat templates use newlines; the corpus lines have none
        )
    else:
        raise ValueError(f"unknown tokenizer algorithm {spec.algorithm!r} (bpe, wordpiece, unigram)")
    return tok, trainer


def build(family: str, size: str = "tiny", seed: int = 0):
    """Build (model, processor) for a family in memory, seeded."""
    fam = get_family(family, role="zoo")
    if size not in fam.sizes:
        raise ValueError(f"family {family!r} has no zoo size {size!r}; sizes: {', '.join(fam.sizes)}")
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(fam.tokenizer)
    tokenizer.chat_template = fam.chat_template
    model, processor = fam.build_tiny(size, tokenizer, seed)
    processor.chat_template = fam.chat_template
    return model.eval(), processor


def build_to_dir(family: str, out: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Build a tiny VLM and save it (model + processor) atomically to `out`."""
    out = Path(out)
    model, processor = build(family, size, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "genrecal_zoo.json").write_text(json.dumps({"family": family, "size": size, "seed": seed}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
