"""Top-1 agreement of an exported text model with PyTorch fp32 on real English text, teacher-forced.

    ids = text_ids(processor.tokenizer)                      # [1, L], L >= MIN_TOKENS + 1
    ref = torch_text_reference(model, ids)                   # once per student
    record = agreement(ref, artifact_logits)                 # artifact_logits [L, V] on the same ids

Each position predicts the next token from the true prefix (one prefill over the whole text), so
every one of the L positions is an independent top-1 comparison; `next_token_accuracy` is how often
each side predicts the text's actual next token. The text is the Gettysburg Address (1863) and the
Preamble of the U.S. Constitution (1787), both in the public domain: prose a language model has
statistics for, unlike the easy-vqa questions, so quantisation error shows on real activations.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genrecal.errors import GenrecalError

MIN_TOKENS = 256
MAX_TOKENS = 512  # small zoo vocabularies spell the text in many more pieces; the rest is cut
TEXT_SOURCE = "Gettysburg Address (1863) + Preamble of the U.S. Constitution (1787), public domain"
TEXT = (
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "Liberty, and dedicated to the proposition that all men are created equal.\n\n"
    "Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so "
    "dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a "
    "portion of that field, as a final resting place for those who here gave their lives that that nation might "
    "live. It is altogether fitting and proper that we should do this.\n\n"
    "But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this ground. "
    "The brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or "
    "detract. The world will little note, nor long remember what we say here, but it can never forget what they "
    "did here. It is for us the living, rather, to be dedicated here to the unfinished work which they who fought "
    "here have thus far so nobly advanced. It is rather for us to be here dedicated to the great task remaining "
    "before us -- that from these honored dead we take increased devotion to that cause for which they gave the "
    "last full measure of devotion -- that we here highly resolve that these dead shall not have died in vain -- "
    "that this nation, under God, shall have a new birth of freedom -- and that government of the people, by the "
    "people, for the people, shall not perish from the earth.\n\n"
    "We the People of the United States, in Order to form a more perfect Union, establish Justice, insure "
    "domestic Tranquility, provide for the common defence, promote the general Welfare, and secure the Blessings "
    "of Liberty to ourselves and our Posterity, do ordain and establish this Constitution for the United States "
    "of America."
)


class TextAgreementError(GenrecalError):
    """A tokenizer that turns the reference text into too few tokens to measure agreement."""


@dataclass
class TextReference:
    """PyTorch's side, computed once per student."""

    ids: np.ndarray  # [1, L] int64
    top1: np.ndarray  # [L] PyTorch fp32 argmax at every position


def text_ids(tokenizer, min_tokens: int = MIN_TOKENS) -> np.ndarray:
    """The reference text as ids [1, L] (no special tokens), min_tokens + 1 <= L <= MAX_TOKENS."""
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"][:MAX_TOKENS]
    if len(ids) < min_tokens + 1:
        raise TextAgreementError(f"the reference text is only {len(ids)} tokens with this tokenizer "
                                 f"(need {min_tokens + 1})")
    return np.asarray([ids], dtype=np.int64)


def torch_text_reference(model, tokenizer) -> TextReference:
    """PyTorch fp32 logits of the student's text path on the reference text (text only, no image)."""
    import torch

    ids = text_ids(tokenizer)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.ones_like(torch.from_numpy(ids))).logits
    return TextReference(ids=ids, top1=logits[0].float().argmax(-1).numpy())


def agreement(ref: TextReference, logits: np.ndarray) -> dict:
    """The manifest record for an artifact's logits [L, V] on `ref.ids`."""
    got = np.asarray(logits).argmax(-1)
    if got.shape != ref.top1.shape:
        raise TextAgreementError(f"artifact gave logits for {got.shape[0]} positions, expected {ref.top1.shape[0]}")
    nxt = ref.ids[0, 1:]
    return {
        "text": TEXT_SOURCE, "tokens": int(ref.top1.shape[0]),
        "top1_agreement": float((got == ref.top1).mean()),
        "next_token_accuracy": {"torch": float((ref.top1[:-1] == nxt).mean()), "artifact": float((got[:-1] == nxt).mean())},
    }
