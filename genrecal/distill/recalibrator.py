"""The Recalibrator: maps student features into the teacher's space (training only; never exported).

proj_pre (d_l -> d_s) -> `depth` decoder blocks of the *student's* layer class and config, with a
fresh 1-D RoPE over the Recalibrator's own sequence -> proj_post (d_s -> d_l) -> RMSNorm(d_l)
initialised from the teacher's final norm. Attention runs in SDPA; a forward that must keep the
last block's attention map (the attention-mass diagnostic) runs in eager mode.
"""
from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from genrecal.families import get_family
from genrecal.families.base import text_model

CONFIG_NAME = "recalibrator_config.json"
WEIGHTS_NAME = "recalibrator.safetensors"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _class_path(obj) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _import(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


class Recalibrator(nn.Module):
    def __init__(self, meta: dict):
        """Build from a metadata dict (see `from_models`); weights are set separately."""
        super().__init__()
        self.meta = meta
        d_l, d_s = meta["teacher_hidden"], meta["student_hidden"]
        text_cfg = _import(meta["text_config_class"])(**meta["text_config"])
        text_cfg._attn_implementation = "sdpa"  # switched to eager per forward when the map is kept
        self.text_cfg = text_cfg  # shared by the layers' attention modules
        layer_cls, rotary_cls = _import(meta["layer_class"]), _import(meta["rotary_class"])
        self.rope_ids = get_family(meta["student_family"], role="student").rope_position_ids
        self.proj_pre = nn.Linear(d_l, d_s, bias=False)
        self.layers = nn.ModuleList(layer_cls(text_cfg, layer_idx=i) for i in range(meta["depth"]))
        self.rotary = rotary_cls(config=text_cfg)
        self.proj_post = nn.Linear(d_s, d_l, bias=False)
        self.norm = RMSNorm(d_l, meta.get("norm_eps", 1e-6))
        self.last_attention: torch.Tensor | None = None  # [B, heads, L, L] of the last block

    @classmethod
    def from_models(cls, teacher, student, student_family: str, depth: int = 2, init: str = "student"):
        s_body = text_model(student)
        t_cfg = teacher.config.get_text_config()
        s_cfg = student.config.get_text_config()
        meta = {
            "student_family": student_family,
            "teacher_hidden": t_cfg.hidden_size,
            "student_hidden": s_cfg.hidden_size,
            "depth": depth,
            "init": init,
            "text_config_class": _class_path(s_cfg),
            "text_config": _plain_config(s_cfg),
            "layer_class": _class_path(s_body.layers[0]),
            "rotary_class": _class_path(s_body.rotary_emb),
            "norm_eps": getattr(t_cfg, "rms_norm_eps", 1e-6),
        }
        recal = cls(meta)
        if init == "student":
            for mine, theirs in zip(recal.layers, s_body.layers[-depth:]):
                mine.load_state_dict(theirs.state_dict())
        t_norm = getattr(text_model(teacher), "norm", None)
        weight = getattr(t_norm, "weight", None)
        # Gemma-style norms store (w - 1); copy only plain RMSNorm weights of the right shape.
        if weight is not None and weight.shape == (meta["teacher_hidden"],) and "Gemma" not in type(t_norm).__name__:
            recal.norm.weight.data.copy_(weight.detach().float())
        return recal

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep_attention: bool = False) -> torch.Tensor:
        """x: [B, L, d_s] packed left-aligned inputs; mask: [B, L] 1 = real token. -> [B, L, d_l].

        keep_attention: run eager attention and keep the last block's map in `last_attention`
        ([B, heads, L, L]); otherwise SDPA and `last_attention` is None.
        """
        bsz, length, _ = x.shape
        ids = torch.arange(length, device=x.device).unsqueeze(0).expand(bsz, length)  # fresh 0..N-1
        pos = self.rotary(x, self.rope_ids(ids))
        allowed = _causal_padding_mask(mask)
        # SDPA takes the boolean mask as is; eager adds it to the scores
        attn = _additive(allowed) if keep_attention else allowed
        self.last_attention = None
        self.text_cfg._attn_implementation = "eager" if keep_attention else "sdpa"
        try:
            h = x
            for i, layer in enumerate(self.layers):
                last = keep_attention and i == len(self.layers) - 1
                hook = layer.self_attn.register_forward_hook(self._keep_attention) if last else None
                out = layer(h, attention_mask=attn, position_ids=ids, position_embeddings=pos)
                h = out[0] if isinstance(out, tuple) else out
                if hook is not None:
                    hook.remove()
        finally:
            self.text_cfg._attn_implementation = "sdpa"
        return self.norm(self.proj_post(h))

    def _keep_attention(self, module, args, output):
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        self.last_attention = None if weights is None else weights.detach()

    def save(self, out_dir: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Config + safetensors; state: the weights to write (default: this module's own state dict)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).write_text(json.dumps(self.meta, indent=2))
        state = self.state_dict() if state is None else state
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out / WEIGHTS_NAME))

    @classmethod
    def load(cls, in_dir: str | Path) -> "Recalibrator":
        src = Path(in_dir)
        recal = cls(json.loads((src / CONFIG_NAME).read_text()))
        recal.load_state_dict(load_file(str(src / WEIGHTS_NAME)))
        return recal


def _plain_config(cfg) -> dict:
    d = copy.deepcopy(cfg.to_dict())
    for key in ("architectures", "transformers_version", "model_type", "dtype", "torch_dtype"):
        d.pop(key, None)
    return d


def _causal_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, L] validity -> boolean [B, 1, L, L], True = may attend: causal, and padding never attended.

    Every row keeps key 0 (samples are left-aligned), so no query row is fully masked."""
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    return (causal.unsqueeze(0) & mask.bool().unsqueeze(1)).unsqueeze(1)  # [B, 1, L(q), L(k)]


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """Boolean mask -> additive fp32 mask (0 where allowed, the fp32 minimum elsewhere) for eager attention."""
    neg = torch.finfo(torch.float32).min
    return torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill(~allowed, neg)
