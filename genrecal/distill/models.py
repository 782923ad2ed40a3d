"""Load teacher and student VLMs the way a user's hub checkpoint loads: Auto classes, safetensors only."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from genrecal.artifacts.integrity import check_safetensors_dir
from genrecal.errors import GenrecalError
from genrecal.families import Family, get_family
from genrecal.families.base import image_token_id


class ModelLoadError(GenrecalError, RuntimeError):
    """A model or processor that cannot be loaded; the message says which path and why."""


@dataclass
class LoadedVLM:
    path: str
    model: nn.Module
    processor: Any
    family: Family | None  # None: a teacher served by the generic path
    model_type: str
    checkpoint_dtype: torch.dtype = torch.float32  # the dtype the checkpoint was saved in
    pad_note: str | None = None  # set when the tokenizer had no pad token and pads by the fallback rule

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def image_token_id(self) -> int | None:
        return image_token_id(self.processor, self.family)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") != 1


def read_config(path: str, role: str, trust_remote_code: bool = False):
    """The model's transformers config (ModelLoadError if the dir or its config is missing or bad)."""
    if _looks_local(path) and not Path(path).expanduser().is_dir():
        raise ModelLoadError(f"{role} model dir not found: {path}")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read the {role} config at {path}: {str(exc).splitlines()[0]}") from None


def checkpoint_dtype(config) -> torch.dtype:
    """The dtype a checkpoint was saved in: its config's `dtype` (transformers writes it); fp32 if unset."""
    value = getattr(config, "dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.float32


def load_vlm(path: str, role: str, trust_remote_code: bool = False, dtype: torch.dtype | None = None,
             device_map: str | None = None) -> LoadedVLM:
    """Load a VLM and its processor; role is 'teacher' or 'student' (students need a registered family).

    dtype: the weights' dtype in memory (None: the checkpoint's own); device_map: a transformers
    device map (e.g. "auto") to spread the model over several GPUs. Raises ModelLoadError.
    """
    config = read_config(path, role, trust_remote_code)
    family = get_family(config.model_type, role=role)
    saved_dtype = checkpoint_dtype(config)
    placement = {"device_map": device_map} if device_map else {}
    check_safetensors_dir(path, role)  # a truncated/garbage file: one line naming it (CorruptFileError)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype or "auto", **placement)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot load the {role} at {path}: {str(exc).splitlines()[0]}") from None
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(
            f"{path}: AutoProcessor returned {type(processor).__name__}, not a VLM processor "
            "(is torchvision installed? is preprocessor_config.json present?)")
    note = pad_fallback(processor, model, role, path)
    return LoadedVLM(path, model.eval(), processor, family, config.model_type, saved_dtype, note)


def pad_fallback(processor, model, role: str, path: str) -> str | None:
    """A tokenizer without a pad token pads, in memory only, with the model's generation config's
    pad_token_id, else its eos token (transformers' generate() rule); returns the note saying so (None:
    it has a pad token). Padded positions are masked out, so the id does not change training; the saved
    student keeps the user's tokenizer (outputs.write_student). ModelLoadError when there is neither."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token_id is not None:
        return None
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    for source, pad in (("its generation config's pad_token_id", getattr(gen, "pad_token_id", None)),
                        ("its eos token", eos if isinstance(eos, int) else tokenizer.eos_token_id)):
        if isinstance(pad, int) and 0 <= pad < len(tokenizer):
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
            return (f"the {role} tokenizer ({path}) has no pad token: it pads with {source} "
                    f"{tokenizer.pad_token!r} (id {pad}), transformers' generate() rule; padded positions are "
                    "masked, so this does not change training")
    raise ModelLoadError(f"the {role} tokenizer ({path}) has neither a pad nor an eos token, so batches cannot be "
                         "padded: set tokenizer.pad_token and save it with the model")
