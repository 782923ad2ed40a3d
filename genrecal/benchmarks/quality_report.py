"""Summaries and the written report of `genrecal-bench quality`: quality.json, quality.md, quality.png.

A run record is one trained student: {"name", "method", "seed", "accuracy", "train_seconds",
"eval_seconds", "steps", "samples", "stage_steps", "overrides", "attention_mass"}. `name` is the
method for the three compared methods and the variant's name for investigated GenRecal variants.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

COMPARED = ("sft", "uld", "genrecal")


def gap_closed(acc: float, sft: float, teacher: float) -> float | None:
    """(method - sft) / (teacher - sft); None when the teacher does not beat SFT (nothing to close)."""
    gap = teacher - sft
    return None if gap <= 0 else (acc - sft) / gap


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict], teacher_acc: float) -> dict[str, dict]:
    """Per name (method or variant): accuracy mean/sd over seeds, gap closed, time, budget, mass."""
    names = list(dict.fromkeys(r["name"] for r in runs))
    out: dict[str, dict] = {}
    for name in names:
        rs = [r for r in runs if r["name"] == name]
        acc, sd = mean_sd([r["accuracy"] for r in rs])
        out[name] = {"method": rs[0]["method"], "n_seeds": len(rs), "accuracy_mean": acc, "accuracy_sd": sd,
                     "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rs),
                     "steps": rs[0]["steps"], "samples": rs[0]["samples"], "overrides": rs[0]["overrides"]}
        kinds = sorted({k for r in rs for k in r.get("by_kind", {})})
        out[name]["by_kind_mean"] = {k: statistics.fmean(r["by_kind"][k] for r in rs) for k in kinds}
        if all("in_kind" in r for r in rs):
            out[name]["in_kind_mean"] = {k: statistics.fmean(r["in_kind"]["by_kind"][k] for r in rs) for k in kinds}
        masses = [r["attention_mass"]["distill_mean"] for r in rs if r.get("attention_mass")]
        if masses:
            out[name]["attention_mass_distill"] = mean_sd(masses)
            out[name]["attention_mass_align"] = mean_sd([r["attention_mass"]["align_mean"] for r in rs])
    sft = out.get("sft", {}).get("accuracy_mean")
    for s in out.values():
        s["gap_closed"] = None if sft is None else gap_closed(s["accuracy_mean"], sft, teacher_acc)
    return out


def verdict(summary: dict, teacher_acc: float) -> dict:
    """The issue's targets, each True/False (None when a method is missing)."""
    acc = {m: summary[m]["accuracy_mean"] for m in COMPARED if m in summary}
    if len(acc) < len(COMPARED):
        return {"genrecal>uld>sft": None, "genrecal_closes_half_gap": None, "teacher_beats_sft_by_10": None}
    return {"genrecal>uld>sft": acc["genrecal"] > acc["uld"] > acc["sft"],
            "genrecal_closes_half_gap": (summary["genrecal"]["gap_closed"] or 0.0) >= 0.5,
            "teacher_beats_sft_by_10": teacher_acc - acc["sft"] >= 0.10}


def _pct(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if sd is None else f"{100 * x:.1f} ± {100 * sd:.1f}%"


def _mass(s: dict) -> str:
    if "attention_mass_distill" not in s:
        return "-"
    (a, _), (d, _) = s["attention_mass_align"], s["attention_mass_distill"]
    return f"{a:.2f} / {d:.2f}"


def _cached(model: dict) -> str:
    return " (cached)" if model.get("reused") else ""


def _in_kind(model: dict) -> str:
    return _kinds((model.get("in_kind") or {}).get("by_kind"))


def _kinds(by_kind: dict | None) -> str:
    if not by_kind:
        return ""
    return " / ".join(f"{100 * by_kind[k]:.0f}" for k in ("yes_no", "shape", "color") if k in by_kind)


def markdown(result: dict) -> str:
    """The report table plus the regime it was measured in."""
    summ, reg = result["summary"], result["regime"]
    t, p, prior = result["teacher"], result["pretrained_student"], result["question_only_prior"]
    sft = summ["sft"]["accuracy_mean"] if "sft" in summ else None
    gap = (lambda acc: _pct(gap_closed(acc, sft, t["accuracy"]))) if sft is not None else (lambda acc: "-")
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [
        "# GenRecal quality benchmark (easy-vqa)", "",
        f"Command: `{result['command']}`  ",
        f"Evaluation: {reg['eval']}.  ",
        f"Teacher: {reg['teacher']}.  ",
        f"Student: {reg['student']}.  ",
        f"Budget (every method, seeds {seeds}): {reg['budget']}.", "",
        "| model | accuracy (mean ± sd) | per seed | yes-no / shape / colour | answers in kind | gap closed "
        "| train s / run | steps x batch | attn. mass on q_s (align / distill) |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| teacher ({t['family']}) | {_pct(t['accuracy'])} | | {_kinds(t.get('by_kind'))} | "
        f"{_in_kind(t)} | | "
        f"{t['train_seconds']:.0f}{_cached(t)} | {t['steps']} x {t['samples'] // t['steps']} | |",
        f"| question-only prior (no model) | {_pct(prior['accuracy'])} | | {_kinds(prior['by_kind'])} | | "
        f"{gap(prior['accuracy'])} | | | |",
        f"| pretrained student (start) | {_pct(p['accuracy'])} | | {_kinds(p.get('by_kind'))} | "
        f"{_in_kind(p)} | {gap(p['accuracy'])} "
        f"| {p['train_seconds']:.0f}{_cached(p)} | {p['steps']} x {p['samples'] // p['steps']} | |",
    ]
    for name, s in summ.items():
        per_seed = " ".join(_pct(r["accuracy"]) for r in result["runs"] if r["name"] == name)
        label = name if name in COMPARED else f"variant: {name}"
        lines.append(f"| {label} | {_pct(s['accuracy_mean'], s['accuracy_sd'])} | {per_seed} | "
                     f"{_kinds(s.get('by_kind_mean'))} | {_kinds(s.get('in_kind_mean'))} | {_pct(s['gap_closed'])} | "
                     f"{s['train_seconds_mean']:.0f} | "
                     f"{s['steps']} x {s['samples'] // s['steps']} | {_mass(s)} |")
    v = result["verdict"]
    lines += ["", "Answers in kind: the share of answers that are a word of the asked kind (yes/no, a shape, a "
              "colour), right or wrong. Gap closed = (model - SFT) / (teacher - SFT) on the means. "
              "Question-only prior: each test "
              "question answered with its most frequent easy-vqa train answer, image unseen. Attention mass: mean "
              "share of the Recalibrator's last-block attention from teacher-answer positions onto the "
              "student-question part, averaged over the align and the distill stage; uniform causal attention "
              f"would give {result.get('attention_mass_uniform', float('nan')):.3f} on these samples, so only a "
              "clear drop below that would mean the Recalibrator ignores the student.", "",
              f"Targets: GenRecal > ULD > SFT: **{v['genrecal>uld>sft']}**; GenRecal closes >= half the gap: "
              f"**{v['genrecal_closes_half_gap']}**; teacher beats SFT by >= 10 points: "
              f"**{v['teacher_beats_sft_by_10']}**.", ""]
    best = max(s["accuracy_mean"] for s in summ.values())
    if best < prior["accuracy"] + 0.02:  # nothing measurably above "ignore the image"
        lines += [f"Note: no student scores more than 2 points above the question-only prior "
                  f"({_pct(prior['accuracy'])}; best {_pct(best)}): in this regime none of them uses the image "
                  "measurably, so the comparison shows which method reaches the prior, not which transfers the "
                  "teacher's visual knowledge.", ""]
    variants = {n: s["overrides"] for n, s in summ.items() if n not in COMPARED}
    if variants:
        lines += ["Variants (GenRecal with these DistillConfig changes): "
                  + "; ".join(f"`{n}` = {json.dumps(o)}" for n, o in variants.items()) + ".", ""]
    lines += ["Invocations (a later one reuses finished runs and cached models of an earlier one):", ""]
    lines += [f"- `{i['command']}`: {i['wall_seconds'] / 60:.1f} min, {i['trained_runs']} runs trained, "
              f"{i['reused_runs']} reused, teacher {'reused' if i['teacher_reused'] else 'trained'}; {i['host']}"
              for i in result.get("invocations", [])]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Bars (mean, sd error bars, seeds as dots) per student; teacher as a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    summ = result["summary"]
    names = ["pretrained"] + list(summ)
    means = [result["pretrained_student"]["accuracy"]] + [summ[n]["accuracy_mean"] for n in summ]
    sds = [0.0] + [summ[n]["accuracy_sd"] for n in summ]
    colors = ["#bbbbbb"] + ["#4c72b0" if n in COMPARED else "#8fb0d9" for n in summ]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names)), 4))
    x = range(len(names))
    ax.bar(x, [100 * m for m in means], yerr=[100 * s for s in sds], color=colors, capsize=4)
    for i, n in enumerate(names[1:], start=1):
        ys = [100 * r["accuracy"] for r in result["runs"] if r["name"] == n]
        ax.scatter([i] * len(ys), ys, color="black", s=10, zorder=3)
    ax.axhline(100 * result["teacher"]["accuracy"], color="#c44e52", linestyle="--", label="teacher")
    prior = result.get("question_only_prior", {}).get("accuracy")
    if prior is not None:
        ax.axhline(100 * prior, color="#555555", linestyle=":", label="question-only prior")
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("easy-vqa test accuracy (%)")
    low = min(means + [result["teacher"]["accuracy"]] + ([prior] if prior is not None else []))
    ax.set_ylim(max(0, 100 * low - 10), 100)
    ax.set_title(f"{result['regime']['pair']}, {len(result['seeds'])} seed(s)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_all(result: dict, out: Path) -> dict[str, Path]:
    """OUT/quality.json, .md and .png (atomic writes; genrecal.benchmarks.results.write_report)."""
    from genrecal.benchmarks.results import write_report

    return write_report(result, out, "quality", markdown(result), plot)
