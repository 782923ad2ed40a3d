"""Where each part runs: the teacher, its head and every batch go to Accelerate's device (the
student and the Recalibrator go there through `Accelerator.prepare`), or the teacher is spread
over several GPUs with a transformers `device_map`."""
from __future__ import annotations

import copy

import torch
from torch import nn

from genrecal.distill.config import ConfigError


def check_device_map(device_map: str | None, device_type: str, num_processes: int) -> None:
    """A teacher device_map needs GPUs and one process (each process would otherwise claim every GPU)."""
    if not device_map:
        return
    if device_type != "cuda":
        raise ConfigError("--teacher-device-map needs CUDA GPUs; on CPU the teacher runs in the training process")
    if num_processes > 1:
        raise ConfigError(f"--teacher-device-map runs in one process, not {num_processes}: launch one process "
                          "(the student then trains on the first GPU), or drop the flag so every process "
                          "holds its own teacher copy")


def input_device(model: nn.Module) -> torch.device:
    """Where a (possibly device-mapped) model takes its inputs: the device of its first parameter."""
    return next(model.parameters()).device


def to_device(batch: dict | None, device: torch.device) -> dict | None:
    """Every tensor of a collated batch moved to `device` (None stays None)."""
    if batch is None:
        return None
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def head_on(head: nn.Module, device: torch.device) -> nn.Module:
    """The frozen teacher head on `device`: itself, or a frozen copy when a device_map put it elsewhere."""
    if input_device(head) == device:
        return head
    return copy.deepcopy(head).to(device).requires_grad_(False)


def checkpointing_wanted(setting: str, device_type: str) -> bool:
    """gradient_checkpointing auto | on | off -> whether the student recomputes activations (auto: on GPU)."""
    return setting == "on" or (setting == "auto" and device_type == "cuda")
