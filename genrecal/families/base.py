"""The family record: everything the rest of genrecal knows about one VLM family, in one place.

A family is keyed by transformers' ``config.model_type`` and lives in one module,
``genrecal/families/<model_type>.py``, which builds a ``Family`` and registers it where it is defined
(``FAMILY = register(Family(...))``). Distillation reads the model access and chat facts; the zoo
builds its sizes; export reads ``onnx`` (genrecal.families.onnx_parts.OnnxSpec), ``gguf``
(genrecal.families.gguf_parts.GgufRoute) and ``clients``; the targets a family supports follow from
which of these it declares. Nothing inherits from anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from genrecal.families.gguf_parts import GgufRoute
from genrecal.families.model_access import (  # noqa: F401 - the accessors every family shares
    UnsupportedFamilyError,
    attention_layers,
    final_norm_weight,
    image_token_id,
    text_model,
)
from genrecal.families.onnx_parts import OnnxSpec


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
    # ordinary (non-special) tokens the family's real vocabularies have and the zoo's small corpus would
    # not learn, e.g. "\n\n" (llama.cpp's libmtmd looks it up as one token for Idefics3 images); byte-level
    # BPE only: the zoo appends each one with the merges that build it (zoo.add_whole_tokens)
    whole_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientFacts:
    """What the ONNX clients other than genrecal's runtime need to know about the family."""

    genai_type: str | None = None
    """onnxruntime-genai's `model.type` whose pipeline runs this family's ONNX export (genai_config.json
    is written only when set)."""
    onnx_decoder_auto: str = "torchscript"
    """What `--onnx-decoder auto` gives: "builder" (onnxruntime-genai's model builder, where it keeps
    parity and the clients ran it) or "torchscript" (genrecal's own decoder graph)."""
    onnx_decoder_auto_why: str = ""
    """Why auto keeps genrecal's decoder, when it does (recorded in the manifest's `decoder_from`)."""


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
    onnx: OnnxSpec | None = None  # the ONNX export (cpu target; jetson's standard-ops plan)
    gguf: GgufRoute | None = None  # the GGUF pair for llama.cpp (phone target)
    clients: ClientFacts = field(default_factory=ClientFacts)
    edgellm: bool = False  # TensorRT Edge-LLM's exporter takes it with its vision tower (jetson target)
    edgellm_note: str = ""  # why not, when it does not (printed with the fallback to genrecal's TensorRT plan)
    # how Edge-LLM's runtime turns an image into tokens for this family: "grid" (Qwen's smart resize to a patch
    # grid) or "tiles" (InternVL's fixed-size tiles); the host checks compare it with the processor
    edgellm_images: str = ""
    notes: str = ""

    @property
    def formats(self) -> tuple[str, ...]:
        """The export formats this family declares: "onnx", "gguf"."""
        return tuple(f for f, spec in (("onnx", self.onnx), ("gguf", self.gguf)) if spec is not None)

    # ---- accessors shared by every family in transformers 5 (model.model.language_model) ----
    def text_model(self, model: nn.Module) -> nn.Module:
        return text_model(model)

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.get_output_embeddings()
