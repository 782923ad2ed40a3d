"""Pure loss functions. Heads are applied in chunks over tokens and recomputed in backward
(activation checkpointing), so (tokens x vocab) logits never exist twice; teacher vocabularies
are 150k+ in real use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def apply_linear(head, feats: torch.Tensor) -> torch.Tensor:
    """head(feats) with feats cast to the Linear's weight dtype (a bf16 teacher head on fp32 features,
    or an fp32 proj_pre on bf16 teacher features). Under autocast the Linear picks the dtype itself."""
    if not torch.is_autocast_enabled(feats.device.type):
        feats = feats.to(head.weight.dtype)
    return head(feats)


def head_ce_kl(head, feats: torch.Tensor, targets: torch.Tensor, ref_feats: torch.Tensor | None = None,
               temperature: float = 1.0, chunk: int = 256) -> dict[str, torch.Tensor]:
    """CE(head(feats), targets) and KL(softmax(head(ref)/T) || softmax(head(feats)/T)) * T^2.

    feats: [N, d] (grad flows), targets: [N], ref_feats: [N, d] (no grad; the teacher's own
    features at the matching positions). Both losses are means over the N scored tokens.
    """
    n = feats.shape[0]
    total = feats.new_zeros(2, dtype=torch.float32)
    for i in range(0, n, chunk):
        ref = None if ref_feats is None else ref_feats[i:i + chunk].detach()
        part = checkpoint(_chunk_ce_kl, head, feats[i:i + chunk], targets[i:i + chunk], ref, temperature,
                          use_reentrant=False)
        total = total + part
    total = total / max(n, 1)
    out = {"ce": total[0]}
    if ref_feats is not None:
        out["kl"] = total[1]
    return out


def _chunk_ce_kl(head, feats, targets, ref, temperature):
    logits = apply_linear(head, feats).float()  # [c, V]
    ce = F.cross_entropy(logits, targets, reduction="sum")
    if ref is None:
        return torch.stack([ce, ce.new_zeros(())])
    with torch.no_grad():
        ref_logp = F.log_softmax(apply_linear(head, ref).float() / temperature, dim=-1)
    logp = F.log_softmax(logits / temperature, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum() * temperature**2
    return torch.stack([ce, kl])


def uld_distance(student_probs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Universal Logit Distillation (Boizard et al. 2024): L1 between sorted probability vectors.

    student_probs [N, Vs], teacher_probs [N, Vt], rows aligned by answer index; the shorter
    vocabulary is zero-padded. Mean over rows.
    """
    s = student_probs.sort(dim=-1, descending=True).values
    t = teacher_probs.sort(dim=-1, descending=True).values
    width = max(s.shape[-1], t.shape[-1])
    s = F.pad(s, (0, width - s.shape[-1]))
    t = F.pad(t, (0, width - t.shape[-1]))
    return (s - t).abs().sum(-1).mean()


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Token-level forward KL(teacher || student) for a shared vocabulary (the `kd` baseline)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2
