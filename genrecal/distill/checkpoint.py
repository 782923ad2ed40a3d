"""Stage-aware, atomic, verifiable checkpoints: a run killed at any instant resumes from the last complete one.

Each checkpoint's state.json records the size and sha256 of its files (and the fingerprint of the
run's data); `resumable_checkpoint` verifies them and falls back to the newest checkpoint that is
whole, saying which one it skipped and why. A full disk while saving is one DiskFullError line, and
leaves the earlier checkpoints and the `latest` pointer as they were.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genrecal.artifacts.integrity import CorruptFileError, check_safetensors, disk_full_guard
from genrecal.artifacts.manifest import sha256_file
from genrecal.fsutil import atomic_dir, write_text_atomic

LATEST = "latest"
STATE = "state.json"
DISK_HINT = ("the earlier checkpoints are intact: free some space and run the same command with --resume "
             "(or lower --keep-checkpoints)")


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
                    keep: int = 2, data: dict | None = None) -> Path:
    """Write <root>/step-XXXXXXX atomically (temp dir + rename), then point <root>/latest at it.

    weights: full (gathered) state dict with `student.` / `recal.` keys. optimizer None: no
    optimizer state (a stage-end checkpoint of a sharded run; the next stage starts a new one).
    data: the run's data fingerprint (genrecal.data.fingerprint), recorded for --resume to compare."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{progress.global_step:07d}"
    with atomic_dir(ckpt_root / name) as tmp, disk_full_guard(ckpt_root, f"checkpoint {name}", DISK_HINT):
        save_file({k: v.detach().clone().contiguous().cpu() for k, v in weights.items()},
                  str(tmp / "weights.safetensors"))
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
        rng = {"torch": torch.get_rng_state().tolist(), "python": _py_state(), "numpy": _np_state()}
        files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in sorted(tmp.iterdir())}
        (tmp / STATE).write_text(json.dumps({"progress": asdict(progress), "rng": rng, "files": files,
                                             "data": data}))
    with disk_full_guard(ckpt_root, f"the pointer to checkpoint {name}", DISK_HINT):
        write_text_atomic(ckpt_root / LATEST, name)
    for old in sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt_root / name


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / LATEST
    if not pointer.is_file():
        return None
    path = ckpt_root / pointer.read_text().strip()
    return path if (path / STATE).is_file() else None


def has_checkpoints(ckpt_root: Path) -> bool:
    """Whether a run left checkpoints here (whole or not): such a dir is only continued with --resume."""
    return (ckpt_root / LATEST).is_file() or any(p.is_dir() for p in ckpt_root.glob("step-*"))


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why `ckpt` cannot be resumed from (None: it is whole): state.json unreadable, or a file whose size
    or sha256 differs from its record (checkpoints written before the record: the weights' header)."""
    try:
        state = json.loads((ckpt / STATE).read_text())
        Progress(**state["progress"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{STATE} is missing or unreadable ({type(exc).__name__})"
    files = state.get("files")
    if files is None:  # an older checkpoint: no checksums to compare
        try:
            check_safetensors(ckpt / "weights.safetensors")
        except (OSError, CorruptFileError):
            return "weights.safetensors is missing, truncated or damaged"
        return None
    for name, want in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{name} is {size} bytes, its record says {want['size']}"
        if sha256_file(path) != want["sha256"]:
            return f"{name} does not match its recorded sha256"
    return None


def resumable_checkpoint(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """The newest whole checkpoint (the one `latest` points to first, then the others newest first) and a
    note for each damaged one skipped on the way; (None, notes) when none is whole."""
    pointer = ckpt_root / LATEST
    named = pointer.read_text().strip() if pointer.is_file() else None
    candidates = sorted((p for p in ckpt_root.glob("step-*") if p.is_dir()), reverse=True)
    if named and (ckpt_root / named).is_dir():
        candidates.remove(ckpt_root / named)
        candidates.insert(0, ckpt_root / named)
    notes = []
    for ckpt in candidates:
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt, notes
        notes.append(f"checkpoint {ckpt.name} is damaged ({problem})")
    return None, notes


def load_progress(ckpt: Path) -> Progress:
    return Progress(**json.loads((ckpt / STATE).read_text())["progress"])


def load_data_record(ckpt: Path) -> dict | None:
    """The data fingerprint the checkpoint was written with (None: a checkpoint from before it was recorded)."""
    return json.loads((ckpt / STATE).read_text()).get("data")


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
    rng = json.loads((ckpt / STATE).read_text())["rng"]
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))


def _py_state():
    v, state, gauss = random.getstate()
    return [v, list(state), gauss]


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
