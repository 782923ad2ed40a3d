"""Stage-aware, atomic checkpoints: a run killed at any instant resumes from the last complete one."""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genrecal.fsutil import atomic_dir, write_text_atomic

LATEST = "latest"


@dataclass
class Progress:
    stage_index: int  # index into the run's stage list
    stage_step: int  # optimizer steps completed in that stage
    global_step: int  # optimizer steps completed in the whole run (drives the data order)
    log_lines: int  # lines of train_log.jsonl that belong to the run so far


def module_weights(modules: dict) -> dict[str, torch.Tensor]:
    """{"student": module, "recal": module} -> one flat state dict with `student.` / `recal.` keys."""
    out = {}
    for prefix, module in modules.items():
        if module is not None:
            out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return out


def save_checkpoint(ckpt_root: Path, progress: Progress, weights: dict[str, torch.Tensor], optimizer, scheduler,
                    keep: int = 2) -> Path:
    """Write <root>/step-XXXXXXX atomically (temp dir + rename), then point <root>/latest at it.

    weights: full (gathered) state dict with `student.` / `recal.` keys. optimizer None: no
    optimizer state (a stage-end checkpoint of a sharded run; the next stage starts a new one)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{progress.global_step:07d}"
    with atomic_dir(ckpt_root / name) as tmp:
        save_file({k: v.detach().clone().contiguous().cpu() for k, v in weights.items()},
                  str(tmp / "weights.safetensors"))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        rng = {"torch": torch.get_rng_state().tolist(), "python": _py_state(), "numpy": _np_state()}
        (tmp / "state.json").write_text(json.dumps({"progress": asdict(progress), "rng": rng}))
    write_text_atomic(ckpt_root / LATEST, name)
    for old in sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt_root / name


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_root / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load_progress(ckpt: Path) -> Progress:
    return Progress(**json.loads((ckpt / "state.json").read_text())["progress"])


def restore(ckpt: Path, modules: dict, optimizer=None, scheduler=None) -> None:
    """Load weights (and, if given, optimizer + scheduler state) and the RNG states of `ckpt`."""
    weights = load_file(str(ckpt / "weights.safetensors"))
    for prefix, module in modules.items():
        if module is None:
            continue
        sub = {k[len(prefix) + 1:]: v for k, v in weights.items() if k.startswith(prefix + ".")}
        module.load_state_dict(sub, strict=True)
    if optimizer is not None:
        state = torch.load(ckpt / "optim.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    rng = json.loads((ckpt / "state.json").read_text())["rng"]
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))


def _py_state():
    v, state, gauss = random.getstate()
    return [v, list(state), gauss]


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
