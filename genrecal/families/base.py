"""What every VLM family tells the rest of genrecal, and the generic accessors most families share.

A family is keyed by transformers' ``config.model_type``. Distillation needs to reach the LLM body
(decoder stack, its layer class, rotary embedding, final norm) and the LM head; the zoo needs to
build a tiny instance; export (later) needs its wrappers and tensor maps. Each family file builds one
``Family`` record; nothing inherits from anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


class UnsupportedFamilyError(ValueError):
    """A model whose family genrecal cannot use in the requested role."""


@dataclass(frozen=True)
class TokenizerSpec:
    """How the zoo trains this family's tokenizer (families differ on purpose)."""

    algorithm: str  # "bpe" (byte-level), "wordpiece" (uncased), "unigram"
    vocab_size: int
    special_tokens: tuple[str, ...]  # added as special tokens (chat markers, image tokens)
    bos: str | None
    eos: str
    pad: str
    unk: str | None = None
    extra_special: dict[str, str] = field(default_factory=dict)  # e.g. InternVL's named image tokens
    # ids these special tokens have in the family's real checkpoints: on a real vocabulary (zoo
    # `vocab_gguf=`), a placeholder entry at that id ("[PAD151655]") takes the name instead of a new id
    real_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """Everything genrecal knows about one VLM family."""

    name: str  # transformers model_type, e.g. "qwen2_vl"
    model_class: str  # transformers class, e.g. "Qwen2VLForConditionalGeneration"
    tokenizer: TokenizerSpec
    chat_template: str
    # build(size, tokenizer, seed) -> (model, processor); the zoo saves both
    build_tiny: Callable[[str, Any, int], tuple[nn.Module, Any]]
    sizes: tuple[str, ...] = ("tiny",)
    student: bool = True  # can be a GenRecal student / export source
    # maps 1-D position ids [B, L] to what this family's rotary embedding takes
    rope_position_ids: Callable[[torch.Tensor], torch.Tensor] = lambda ids: ids
    # token string whose count in input_ids is the number of image tokens
    image_token: str = "<image>"
    notes: str = ""

    # ---- accessors shared by every family in transformers 5 (model.model.language_model) ----
    def text_model(self, model: nn.Module) -> nn.Module:
        return text_model(model)

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.get_output_embeddings()


def text_model(model: nn.Module) -> nn.Module:
    """The LLM body (embeddings, decoder layers, final norm, rotary) of a VLM or a causal LM."""
    inner = getattr(model, "model", model)
    for name in ("language_model", "text_model"):
        sub = getattr(inner, name, None)
        if sub is not None and hasattr(sub, "layers"):
            return sub
    if hasattr(inner, "layers"):
        return inner
    raise UnsupportedFamilyError(
        f"cannot find the decoder stack of {type(model).__name__}: expected "
        "model.model.language_model.layers (transformers 5 layout)"
    )


def final_norm_weight(model: nn.Module) -> torch.Tensor | None:
    """The final RMSNorm/LayerNorm weight of the LLM body, if it has one."""
    norm = getattr(text_model(model), "norm", None)
    return None if norm is None else getattr(norm, "weight", None)


def image_token_id(processor: Any, family: Family | None) -> int | None:
    """Id of the token that the processor repeats once per image feature (None if unknown).

    Uses the family's token string; a generic teacher falls back to `processor.image_token`.
    (Gemma3's `processor.image_token_id` is its begin-of-image id, so ids are never read from there.)
    """
    tok = getattr(processor, "tokenizer", processor)
    token = family.image_token if family is not None else getattr(processor, "image_token", None)
    if not token:
        return None
    tid = tok.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tok.unk_token_id else None
