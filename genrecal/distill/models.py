"""Load teacher and student VLMs the way a user's hub checkpoint loads: Auto classes, safetensors only."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from genrecal.families import Family, get_family
from genrecal.families.base import image_token_id


class ModelLoadError(RuntimeError):
    """A model or processor that cannot be loaded; the message says which path and why."""


@dataclass
class LoadedVLM:
    path: str
    model: nn.Module
    processor: Any
    family: Family | None  # None: a teacher served by the generic path
    model_type: str
    checkpoint_dtype: torch.dtype = torch.float32  # the dtype the checkpoint was saved in

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
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype or "auto", **placement)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the {role} at {path}: {str(exc).splitlines()[0]}") from None
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(
            f"{path}: AutoProcessor returned {type(processor).__name__}, not a VLM processor "
            "(is torchvision installed? is preprocessor_config.json present?)")
    return LoadedVLM(path, model.eval(), processor, family, config.model_type, saved_dtype)
