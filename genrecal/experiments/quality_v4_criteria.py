"""The pre-registered criteria and gate of `genrecal-bench quality-v4`, checked on measured figures.

    checks(prior, start, teacher, sft_b1)  -> [{"id", "criterion", "target", "measured", "met"}, ...]
    gate(kd_accuracies, sft_accuracies)    -> {"margin", "every_kd_above_every_sft", "holds", ...}

`met` is None where the figure is not measured yet. Targets: quality_v4_plan.CRITERIA
(benchmarks/results/quality_v4_criteria.md says why).
"""
from __future__ import annotations

from statistics import mean

from genrecal.experiments.quality_v4_plan import CRITERIA


def _pts(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _row(id_: int, criterion: str, target: str, measured: str, met: bool | None) -> dict:
    return {"id": id_, "criterion": criterion, "target": target, "measured": measured, "met": met}


def kinds_over_prior(prior_by_kind: dict, teacher_by_kind: dict) -> dict[str, bool]:
    """Per kind: the teacher beats the prior on it by >= CRITERIA["kind_over_prior"]."""
    return {k: teacher_by_kind.get(k, 0.0) >= p + CRITERIA["kind_over_prior"] for k, p in prior_by_kind.items()}


def checks(prior: dict, start: dict | None, teacher: dict | None, sft_b1: float | None,
           cross_teacher: dict | None = None) -> list[dict]:
    """Criteria 1-7 on the figures at hand. prior: genrecal.data.prior result; start / teacher / cross_teacher:
    quality_v4_runs.score results; sft_b1: mean B1 SFT accuracy (None before the SFT runs)."""
    c, p = CRITERIA, prior["accuracy"]
    rows = [_row(1, "question-only prior measured", "in every table", _pts(p), True)]
    rows.append(_row(2, "B1 SFT >= prior + 10 points", f">= {_pts(p + c['sft_over_prior'])}", _pts(sft_b1),
                     None if sft_b1 is None else sft_b1 >= p + c["sft_over_prior"]))
    s_kind = start["in_kind"] if start else None
    rows.append(_row(3, "start answers in kind", f">= {_pts(c['start_in_kind'])}", _pts(s_kind),
                     None if start is None else s_kind >= c["start_in_kind"]))
    s_acc = start["accuracy"] if start else None
    rows.append(_row(4, "start near the prior", f"{_pts(p - c['start_near_prior'])} .. {_pts(p + c['start_near_prior'])}",
                     _pts(s_acc), None if start is None else abs(s_acc - p) <= c["start_near_prior"] + 1e-9))
    t = teacher["accuracy"] if teacher else None
    met5 = None if teacher is None else t >= c["teacher_min"] and (sft_b1 is None or t >= sft_b1 + c["teacher_over_sft"])
    if teacher is not None and sft_b1 is None and t >= c["teacher_min"]:
        met5 = None  # the 80 % bar holds; the SFT margin is not measured yet
    target5 = f">= {_pts(c['teacher_min'])} and >= B1 SFT + 10 = {_pts(None if sft_b1 is None else sft_b1 + 0.1)}"
    rows.append(_row(5, "same-tokenizer teacher", target5, _pts(t), met5))
    if cross_teacher is None:
        rows.append(_row(6, "teachers within 5 points", "<= 5 points apart", "cross-tokenizer teacher not built", None))
    else:
        gap = abs(cross_teacher["accuracy"] - t)
        rows.append(_row(6, "teachers within 5 points", "<= 5 points apart", f"{100 * gap:.1f} points",
                         gap <= c["teachers_within"]))
    if teacher is None:
        rows.append(_row(7, "no kind at chance", "teacher >= prior + 10 per kind", "-", None))
    else:
        per = kinds_over_prior(prior["by_kind"], teacher["by_kind"])
        text = ", ".join(f"{k} {_pts(teacher['by_kind'].get(k))} vs {_pts(prior['by_kind'][k])}" for k in per)
        rows.append(_row(7, "no kind at chance", "teacher >= prior + 10 per kind", text, all(per.values())))
    return rows


def gate(kd: list[float], sft: list[float]) -> dict:
    """The positive control: mean(KD) - mean(SFT) >= CRITERIA["gate_margin"] and min(KD) > max(SFT).
    kd / sft: held-out accuracies, one per seed (the same seeds)."""
    if not kd or not sft:
        raise ValueError("the gate needs at least one KD and one SFT accuracy")
    margin = mean(kd) - mean(sft)
    above = min(kd) > max(sft)
    return {"kd": kd, "sft": sft, "kd_mean": mean(kd), "sft_mean": mean(sft), "margin": margin,
            "every_kd_above_every_sft": above, "seeds": len(kd),
            "holds": margin >= CRITERIA["gate_margin"] and above}
