"""Reaching into a transformers VLM: the LLM body, its final norm, the image-token id.

Shared by every family (transformers 5 layout: model.model.language_model) and by generic teachers.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genrecal.errors import GenrecalError


class UnsupportedFamilyError(GenrecalError, ValueError):
    """A model whose family genrecal cannot use in the requested role."""


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


def attention_layers(body: nn.Module) -> list[nn.Module]:
    """The decoder layers of a text body that hold softmax attention (`self_attn`), in order: all of them for
    every family but the hybrid ones (Qwen3.5's Gated DeltaNet layers hold `linear_attn` instead)."""
    return [layer for layer in body.layers if hasattr(layer, "self_attn")]


def final_norm_weight(model: nn.Module) -> torch.Tensor | None:
    """The final RMSNorm/LayerNorm weight of the LLM body, if it has one."""
    norm = getattr(text_model(model), "norm", None)
    return None if norm is None else getattr(norm, "weight", None)


def image_token_id(processor: Any, family) -> int | None:
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
