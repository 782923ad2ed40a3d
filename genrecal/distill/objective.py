"""One micro-batch of the GenRecal objective (and the baselines), as a module Accelerate can wrap.

Inputs are right-padded batches rendered by each model's own processor; `answer_start/end` give
each sample's answer span in that model's ids. Nothing assumes the two sequences line up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrecal.distill.diagnostics import shifted
from genrecal.distill.losses import apply_linear, head_ce_kl, token_kl, uld_distance
from genrecal.distill.stages import Stage

SPAN_KEYS = ("answer_start", "answer_end")


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in SPAN_KEYS}


@torch.no_grad()
def teacher_features(teacher: nn.Module, batch: dict) -> torch.Tensor:
    """Final hidden states (after the final norm) of the frozen teacher: [B, L_l, d_l]."""
    return teacher.model(**model_inputs(batch)).last_hidden_state


@torch.no_grad()
def teacher_answer_inputs(teacher: nn.Module, batch: dict, feats: torch.Tensor, kind: str) -> torch.Tensor:
    """What proj_pre reads at the teacher's answer positions: [B, L_l, d_l].

    kind "hidden": `feats` itself (the last-layer states z_al, the paper); "embedding": the
    teacher's input embeddings of its answer ids (its own embedding module, so Gemma-style scaling
    applies). Positions outside the answer span are never read (they hold id 0's embedding)."""
    if kind == "hidden":
        return feats
    ids = batch["input_ids"]  # [B, L_l]
    pos = torch.arange(ids.shape[1], device=ids.device)
    start, end = batch["answer_start"].to(ids.device), batch["answer_end"].to(ids.device)
    span = (pos >= start[:, None]) & (pos < end[:, None])
    embed = teacher.get_input_embeddings()
    return embed(ids.where(span, 0).to(embed.weight.device)).to(feats.device)


def scored_rows(feats: torch.Tensor, ids: torch.Tensor, start: torch.Tensor, end: torch.Tensor):
    """Next-token pairs over each answer: features at [start-1, end-1) predict ids [start, end)."""
    rows = [feats[b, s - 1:e - 1] for b, (s, e) in enumerate(zip(start.tolist(), end.tolist()))]
    tgts = [ids[b, s:e] for b, (s, e) in enumerate(zip(start.tolist(), end.tolist()))]
    return rows, tgts


def pack(parts: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, concatenate its pieces; left-align samples and pad. -> x [B, L, d], mask [B, L]."""
    dtype = parts[0][0].dtype  # under autocast the pieces may differ (student bf16, proj_pre output fp32)
    seqs = [torch.cat([piece.to(dtype) for piece in p], dim=0) for p in parts]
    length = max(s.shape[0] for s in seqs)
    x = seqs[0].new_zeros(len(seqs), length, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), length, dtype=torch.long, device=x.device)
    for i, s in enumerate(seqs):
        x[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = 1
    return x, mask


class DistillObjective(nn.Module):
    """Holds the trainable student and Recalibrator; the frozen teacher head is passed in.

    vocab: (student, teacher) tokenizer lengths; logits are compared over these rows only, so
    heads padded past their tokenizer (Qwen2-VL-7B's 152064 rows for 151936 tokens) still line up.
    """

    def __init__(self, student: nn.Module, recal: nn.Module | None, cfg, vocab: tuple[int, int | None] = (0, None)):
        super().__init__()
        self.student = student
        self.recal = recal
        self.cfg = cfg
        self.vocab = vocab
        self.attention_mass: float | None = None  # set by the main path (see _question_mass)
        self.shuffle: tuple[float, float] | None = None  # (L_ar, shuffled L_ar), see diagnostics.py
        # FSDP's transformer-based auto wrap reads the wrapped module's unsplittable block classes
        self._no_split_modules = getattr(student, "_no_split_modules", None)

    def forward(self, stage: Stage, s_batch: dict, t_batch: dict | None = None,
                t_feats: torch.Tensor | None = None, t_head: nn.Module | None = None,
                keep_attention: bool = False, t_answer: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One micro-batch -> loss terms (scalars, `loss` their weighted sum).

        t_feats: the teacher's final hidden states [B, L_l, d_l]; t_answer: what the Recalibrator
        reads at its answer positions (default t_feats; see `teacher_answer_inputs`).
        keep_attention: a diagnostic step: also compute `attention_mass` (an eager Recalibrator
        pass) and, with cfg.log_shuffle_rise, `shuffle` (see diagnostics.py; None at batch size 1)."""
        cfg, terms = self.cfg, {}
        self.attention_mass, self.shuffle = None, None
        t_answer = t_feats if t_answer is None else t_answer
        s_feats = self.student.model(**model_inputs(s_batch)).last_hidden_state  # [B, L_s, d_s]
        s_rows, s_tgts = scored_rows(s_feats, s_batch["input_ids"], s_batch["answer_start"], s_batch["answer_end"])
        if "sft" in stage.losses or "uld" in stage.losses or "kd" in stage.losses:
            terms["sft"] = head_ce_kl(self.student.get_output_embeddings(), torch.cat(s_rows), torch.cat(s_tgts),
                                      chunk=cfg.head_chunk)["ce"]
        if stage.needs_teacher:
            t_rows, t_tgts = scored_rows(t_feats, t_batch["input_ids"], t_batch["answer_start"], t_batch["answer_end"])
        if {"ar", "kl"} & set(stage.losses):
            terms.update(self._main_path(s_feats, s_batch, t_answer, t_batch, t_rows, t_tgts, t_head, keep_attention))
        if "reg" in stage.losses:
            terms.update(self._reg_path(t_feats, t_answer, t_batch, t_rows, t_tgts, t_head))
        if "uld" in stage.losses:
            terms["uld"] = self._uld(s_rows, t_rows, t_head)
        if "kd" in stage.losses:
            terms["kd"] = self._kd(s_rows, t_rows, t_head)
        weights = {"ar": cfg.w_ar, "kl": cfg.w_kl, "reg_ar": cfg.w_reg, "reg_kl": cfg.w_reg, "sft": cfg.w_sft,
                   "uld": cfg.w_uld, "kd": cfg.w_kl}
        terms["loss"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    def _recal_scores(self, parts, first_scored, n_scored, t_rows, t_tgts, t_head, prefix="", keep=False):
        x, mask = pack(parts)
        r = self.recal(x, mask, keep_attention=keep)  # [B, L, d_l]
        rows = torch.cat([r[b, f:f + n] for b, (f, n) in enumerate(zip(first_scored, n_scored))])
        out = head_ce_kl(t_head, rows, torch.cat(t_tgts), torch.cat(t_rows), self.cfg.temperature, self.cfg.head_chunk)
        return {f"{prefix}ar": out["ce"], f"{prefix}kl": out["kl"]}

    def _main_path(self, s_feats, s_batch, t_answer, t_batch, t_rows, t_tgts, t_head, keep: bool):
        """concat[z_qs, proj_pre(z_al)] -> Recalibrator; scored from the last student question position.
        (z_al: the rows of t_answer, the teacher's answer states or answer-token embeddings.)"""
        q_s = s_batch["answer_start"].tolist()
        spans = list(zip(t_batch["answer_start"].tolist(), t_batch["answer_end"].tolist()))
        answers = [self._proj_pre(t_answer[b, s:e]) for b, (s, e) in enumerate(spans)]
        n_scored = [e - s for s, e in spans]
        parts = [[s_feats[b, :q_s[b]], answers[b]] for b in range(len(spans))]
        out = self._recal_scores(parts, [q - 1 for q in q_s], n_scored, t_rows, t_tgts, t_head, keep=keep)
        self.attention_mass = self._question_mass(q_s, n_scored) if keep else None
        if keep and self.cfg.log_shuffle_rise and len(q_s) > 1:
            self.shuffle = (float(out["ar"].detach()), self._shuffled_ar(s_feats, q_s, answers, t_rows, t_tgts, t_head))
        return out

    @torch.no_grad()
    def _shuffled_ar(self, s_feats, q_s: list[int], answers, t_rows, t_tgts, t_head) -> float:
        """L_ar with each sample's student question features taken from another sample (diagnostics.py)."""
        donors = shifted(len(q_s))
        parts = [[s_feats[d, :q_s[d]], answers[b]] for b, d in enumerate(donors)]
        n_scored = [a.shape[0] for a in answers]
        return float(self._recal_scores(parts, [q_s[d] - 1 for d in donors], n_scored, t_rows, t_tgts, t_head)["ar"])

    def _reg_path(self, t_feats, t_answer, t_batch, t_rows, t_tgts, t_head):
        """Teacher-only path: concat[proj_pre(z_ql), proj_pre(z_al)] keeps the Recalibrator near teacher space."""
        spans = list(zip(t_batch["answer_start"].tolist(), t_batch["answer_end"].tolist()))
        parts = [[self._proj_pre(t_feats[b, :s]), self._proj_pre(t_answer[b, s:e])] for b, (s, e) in enumerate(spans)]
        return self._recal_scores(parts, [s - 1 for s, _ in spans], [e - s for s, e in spans], t_rows, t_tgts,
                                  t_head, prefix="reg_")

    def _proj_pre(self, t_feats: torch.Tensor) -> torch.Tensor:
        """proj_pre on (frozen) teacher features, whatever dtype the teacher runs in."""
        return apply_linear(self.recal.proj_pre, t_feats)

    def _question_mass(self, q_s: list[int], n_answer: list[int]) -> float | None:
        """Mean attention mass that answer positions put on the student-question part (last block)."""
        att = getattr(self.recal, "last_attention", None)
        if att is None:
            return None
        masses = [att[b, :, q:q + n, :q].sum(-1).mean() for b, (q, n) in enumerate(zip(q_s, n_answer))]
        return float(torch.stack(masses).mean())

    def _logits(self, head, feats: torch.Tensor, vocab: int | None) -> torch.Tensor:
        """head(feats) over the tokenizer's rows only (padding rows past it dropped): [n, <=vocab]."""
        logits = apply_linear(head, feats).float()
        return logits[:, :vocab] if vocab else logits

    def _uld(self, s_rows, t_rows, t_head):
        s_head = self.student.get_output_embeddings()
        s_vocab, t_vocab = self.vocab
        dists = []
        for s, t in zip(s_rows, t_rows):
            n = min(s.shape[0], t.shape[0])
            with torch.no_grad():
                t_probs = F.softmax(self._logits(t_head, t[:n], t_vocab), dim=-1)
            dists.append(uld_distance(F.softmax(self._logits(s_head, s[:n], s_vocab), dim=-1), t_probs))
        return torch.stack(dists).mean()

    def _kd(self, s_rows, t_rows, t_head):
        """Token KL over the shared tokenizer's rows; either head may be padded past them."""
        s_head = self.student.get_output_embeddings()
        shared = self.vocab[0]
        losses = []
        for s, t in zip(s_rows, t_rows):
            n = min(s.shape[0], t.shape[0])
            with torch.no_grad():
                t_logits = self._logits(t_head, t[:n], shared)
            losses.append(token_kl(self._logits(s_head, s[:n], shared), t_logits, self.cfg.temperature))
        return torch.stack(losses).mean()
