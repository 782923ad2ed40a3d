"""The Recalibrator: maps student features into the teacher's space (training only; never exported).

proj_pre (d_l -> d_s) -> `depth` decoder blocks of the *student's* layer class and config, with a
fresh 1-D RoPE over the Recalibrator's own sequence -> proj_post (d_s -> d_l) -> RMSNorm(d_l)
initialised from the teacher's final norm (its effective scale: zero-centred norms such as Gemma's and
Qwen3.5's store w - 1).

Hybrid students (Qwen3.5: Gated DeltaNet "linear_attention" layers between "full_attention" ones) give the
Recalibrator attention blocks only: its blocks are built as full-attention layers and `init="student"` copies
the student's last `depth` attention layers (docs/method.md: why not its last layers whatever their kind).

Attention runs in SDPA; a forward that must keep the last block's attention map (the attention-mass
diagnostic) runs in eager mode.
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
from genrecal.families.base import attention_layers, text_model

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
            "text_config": _attention_only(_plain_config(s_cfg)),
            "layer_class": _class_path(s_body.layers[0]),
            "rotary_class": _class_path(s_body.rotary_emb),
            "norm_eps": getattr(t_cfg, "rms_norm_eps", 1e-6),
        }
        recal = cls(meta)
        if init == "student":
            sources = attention_layers(s_body)
            if len(sources) < depth:
                raise ValueError(f"the student has {len(sources)} attention layers; a Recalibrator of depth {depth} "
                                 f"copies {depth} (pass a smaller depth or init='random')")
            for mine, theirs in zip(recal.layers, sources[-depth:]):
                mine.load_state_dict(theirs.state_dict())
        scale = _norm_scale(getattr(text_model(teacher), "norm", None), meta["teacher_hidden"])
        if scale is not None:
            recal.norm.weight.data.copy_(scale)
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


def _attention_only(text_config: dict) -> dict:
    """A hybrid config's `layer_types` made all "full_attention", so the Recalibrator's blocks are attention."""
    if "layer_types" in text_config:
        text_config["layer_types"] = ["full_attention"] * len(text_config["layer_types"])
    return text_config


def _norm_scale(norm: nn.Module | None, dim: int) -> torch.Tensor | None:
    """The per-channel scale an RMSNorm applies, [dim] fp32, or None when `norm` is not an RMSNorm of width
    `dim`: measured on a row of ones (RMS 1) and undone for eps, so w (plain) and 1 + w (zero-centred:
    Gemma, Qwen3.5) both come out as the scale itself. A LayerNorm (it subtracts the mean) gives None."""
    weight = getattr(norm, "weight", None)
    if weight is None or tuple(weight.shape) != (dim,):
        return None
    if isinstance(norm, nn.LayerNorm):
        return weight.detach().float()
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    if eps is None:
        return None
    with torch.no_grad():
        out = norm(torch.ones(1, dim, dtype=weight.dtype, device=weight.device)).float()[0]
    return out * float(1.0 + eps) ** 0.5


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
