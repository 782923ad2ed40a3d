"""Summaries and the written report of `genrecal-bench quality-scenes`: quality_scenes.{json,md,png}.

A run record (genrecal.benchmarks.quality_scenes_runs): {"name", "regime", "seed", "accuracy", "by_kind",
"easy_vqa", "train_seconds", "seconds_per_step", "peak_rss_mb", "shuffle_rise"?, ...}.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from genrecal.benchmarks.quality_report import gap_closed, mean_sd

KINDS = ("count", "color", "shape", "size", "relation", "describe", "exact")


def summarize(runs: list[dict], teacher_acc: float) -> dict[str, dict[str, dict]]:
    """regime -> method -> accuracy mean/sd over seeds, per kind, easy-vqa, s/step, peak RSS, gap closed
    (against that regime's `sft`: gold SFT in (a), SFT on teacher answers in (b))."""
    out: dict[str, dict[str, dict]] = {}
    for regime in dict.fromkeys(r["regime"] for r in runs):
        out[regime] = {}
        for name in dict.fromkeys(r["name"] for r in runs if r["regime"] == regime):
            rs = [r for r in runs if r["regime"] == regime and r["name"] == name]
            acc, sd = mean_sd([r["accuracy"] for r in rs])
            kinds = sorted({k for r in rs for k in r.get("by_kind", {})})
            s = {"n_seeds": len(rs), "accuracy_mean": acc, "accuracy_sd": sd,
                 "by_kind_mean": {k: statistics.fmean(r["by_kind"].get(k, 0.0) for r in rs) for k in kinds},
                 "seconds_per_step": _mean([r.get("seconds_per_step") for r in rs]),
                 "peak_rss_mb": _mean([r.get("peak_rss_mb") for r in rs]),
                 "easy_vqa": _mean([(r.get("easy_vqa") or {}).get("accuracy") for r in rs]),
                 "shuffle_rise_distill": _mean([((r.get("shuffle_rise") or {}).get("distill") or {}).get("mean")
                                                for r in rs])}
            out[regime][name] = s
        sft = out[regime].get("sft", {}).get("accuracy_mean")
        for s in out[regime].values():
            s["gap_closed"] = None if sft is None else gap_closed(s["accuracy_mean"], sft, teacher_acc)
    return out


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return statistics.fmean(vals) if vals else None


def verdict(summary: dict) -> dict[str, dict]:
    """The issue's targets per regime: GenRecal > ULD > SFT and GenRecal closing >= half the gap (None: missing)."""
    out = {}
    for regime, methods in summary.items():
        acc = {m: methods[m]["accuracy_mean"] for m in ("sft", "uld", "genrecal") if m in methods}
        ordered = acc["genrecal"] > acc["uld"] > acc["sft"] if len(acc) == 3 else None
        half = (methods["genrecal"]["gap_closed"] or 0.0) >= 0.5 if "genrecal" in methods and "sft" in methods else None
        out[regime] = {"genrecal>uld>sft": ordered, "genrecal_closes_half_gap": half}
    return out


def _pct(x, sd=None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if sd is None else f"{100 * x:.1f} ± {100 * sd:.1f}%"


def _kinds(by_kind: dict | None) -> str:
    return " / ".join(f"{100 * by_kind[k]:.0f}" if k in (by_kind or {}) else "-" for k in KINDS[:6])


def criteria_lines(result: dict) -> list[str]:
    plan, targets, c = result["plan"], result["criteria_targets"], result.get("criteria")
    lines = ["## Regime criteria (pre-registered; sizes and budgets chosen from these alone, before any "
             "method comparison)", "",
             "| criterion | target | measured | met |", "|---|---|---|---|"]
    depth = f"{plan['student_family']}/{plan['student_size']} vs a {plan['recal_depth']}-layer Recalibrator"
    if not c:
        return lines + [f"| student depth / Recalibrator depth ({depth}) | >= {targets['depth_ratio']:g} | "
                        "(not measured yet) | |",
                        f"| student vision probe, each attribute | >= {100 * targets['probe_min']:.0f} % | | |",
                        f"| teacher vision probe, each attribute | >= {100 * targets['probe_min']:.0f} % | | |",
                        f"| SFT unlimited budget ({plan['unlimited_steps']} steps, {plan['unlimited_images']} images)"
                        f" / teacher | >= {100 * targets['sft_unlimited_vs_teacher']:.0f} % | | |", ""]
    probes = ", ".join(f"{k} {100 * v:.0f}%" for k, v in c["student_probe"].items() if k != "met")
    teacher_probes = ", ".join(f"{k} {100 * v:.0f}%" for k, v in c["teacher_probe"].items() if k != "met")
    u = c["sft_unlimited"]
    return lines + [
        f"| student depth / Recalibrator depth ({depth}) | >= {targets['depth_ratio']:g} | "
        f"{c['depth']['student_layers']} / {c['depth']['recalibrator_layers']} = {c['depth']['ratio']:g} | "
        f"{_yes(c['depth']['met'])} |",
        f"| student vision probe, each attribute | >= {100 * targets['probe_min']:.0f} % | {probes} | "
        f"{_yes(c['student_probe']['met'])} |",
        f"| teacher vision probe, each attribute | >= {100 * targets['probe_min']:.0f} % | {teacher_probes} | "
        f"{_yes(c['teacher_probe'].get('met'))} |",
        f"| SFT unlimited budget ({u['steps']} steps, {u['images']} images) / teacher | "
        f">= {100 * targets['sft_unlimited_vs_teacher']:.0f} % | {_pct(u['accuracy'])} / {_pct(u['teacher'])} = "
        f"{100 * u['ratio']:.0f} % | {_yes(u['met'])} |", ""]


def _yes(flag) -> str:
    return "**yes**" if flag else "**no**"


def markdown(result: dict) -> str:
    plan, t, s = result["plan"], result["teacher"], result["start"]
    runs = result.get("runs", [])
    lines = ["# GenRecal quality benchmark v3: multi-object scenes", "", f"Command: `{result['command']}`  ",
             f"Teacher: {plan['teacher_family']}/{plan['teacher_size']}; student: {plan['student_family']}/"
             f"{plan['student_size']}; budget {plan['budget_steps']} steps x {plan['batch_size']} on "
             f"{plan['budget_images']} images (every method); seeds {', '.join(map(str, result['seeds']))}.", ""]
    if "--quick" in result["command"]:
        lines += ["**A `--quick` smoke run**: every step runs, at budgets far too small to train anything; its "
                  "numbers say nothing about the methods.", ""]
    lines += criteria_lines(result)
    lines += ["| model | held-out scenes | count / colour / shape / size / relation / describe | easy-vqa test |",
              "|---|---|---|---|"]
    for label, m in (("teacher", t), ("student start", s)):
        sc = m.get("scores") or {}
        lines.append(f"| {label} | {_pct(sc.get('accuracy'))} | {_kinds(sc.get('by_kind'))} | "
                     f"{_pct((sc.get('easy_vqa') or {}).get('accuracy'))} |")
    if result.get("teacher_answer_labels"):
        lab = result["teacher_answer_labels"]
        lines += ["", f"Regime (b) targets: the teacher's answers to the budget prompts are right {_pct(lab['accuracy'])}"
                      f" of the time ({lab['n']} prompts; made by {lab['tool']})."]
    summary = result.get("summary") or (summarize(runs, t["scores"]["accuracy"]) if runs else {})
    if runs and not result.get("summary"):
        lines += ["", f"**PARTIAL**: {len(runs)} runs finished so far; the tables fill as runs finish."]
    for regime, methods in summary.items():
        lines += ["", f"## Regime {regime}", "",
                  "| method | accuracy (mean ± sd) | per seed | count / colour / shape / size / relation / describe "
                  "| easy-vqa | gap closed | s / step | peak RSS MB | L_ar shuffle rise (distill) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, m in methods.items():
            seeds = " ".join(_pct(r["accuracy"]) for r in runs if r["regime"] == regime and r["name"] == name)
            rise = "-" if m["shuffle_rise_distill"] is None else f"{m['shuffle_rise_distill']:.3f}"
            lines.append(f"| {name} | {_pct(m['accuracy_mean'], m['accuracy_sd'])} | {seeds} | "
                         f"{_kinds(m['by_kind_mean'])} | {_pct(m['easy_vqa'])} | {_pct(m['gap_closed'])} | "
                         f"{m['seconds_per_step'] or 0:.2f} | {m['peak_rss_mb'] or 0:.0f} | {rise} |")
    unmet = [k for k, v in (result.get("criteria") or {}).items() if isinstance(v, dict) and v.get("met") is False]
    if summary and unmet:
        lines += ["", f"**Regime criteria not met ({', '.join(unmet)})**: the comparison above is not the test the "
                      "criteria were fixed for; read the targets below with that in mind."]
    if summary:
        lines += ["", "Targets per regime: " + "; ".join(
            f"{r}: GenRecal > ULD > SFT **{v['genrecal>uld>sft']}**, half the gap closed "
            f"**{v['genrecal_closes_half_gap']}**" for r, v in verdict(summary).items())]
    for name, why in result.get("skipped_methods", {}).items():
        lines.append(f"- not run: `{name}`: {why}")
    if result.get("wall_seconds"):
        reused = sum(bool(r.get("reused")) for r in runs)
        lines += ["", f"Wall time of this invocation{'' if summary else ' so far'}: {result['wall_seconds'] / 60:.1f} min"
                      + (f" ({reused} of {len(runs)} runs reused from an earlier invocation, not in it)." if reused
                         else ".")]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path | None:
    """Bars per method, one group per regime; teacher as a line."""
    summary = result.get("summary")
    if not summary:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(n for m in summary.values() for n in m))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(names)), 4))
    width = 0.8 / max(1, len(summary))
    for i, (regime, methods) in enumerate(summary.items()):
        xs = [j + i * width for j, n in enumerate(names) if n in methods]
        ax.bar(xs, [100 * methods[n]["accuracy_mean"] for n in names if n in methods], width,
               yerr=[100 * methods[n]["accuracy_sd"] for n in names if n in methods], capsize=3, label=regime)
    ax.axhline(100 * result["teacher"]["scores"]["accuracy"], color="#c44e52", linestyle="--", label="teacher")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=20, ha="right")
    ax.set_ylabel("held-out scene accuracy (%)")
    top = max([100 * result["teacher"]["scores"]["accuracy"]]
              + [100 * (m["accuracy_mean"] + m["accuracy_sd"]) for ms in summary.values() for m in ms.values()])
    ax.set_ylim(0, min(100.0, 1.3 * top + 1))
    ax.legend(loc="upper right", ncol=len(summary) + 1)  # above the bars and the teacher line
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_all(result: dict, out: Path) -> dict[str, Path]:
    """OUT/quality_scenes.json, .md and .png (atomic writes; genrecal.benchmarks.results.write_report)."""
    from genrecal.benchmarks.results import write_report

    return write_report(result, out, "quality_scenes", markdown(result), plot)
