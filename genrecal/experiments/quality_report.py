"""The written reports of the two quality benchmarks: summaries over seeds, targets, NAME.{json,md,png}.

    EASY_VQA.write_all(result, out)   # `genrecal-bench quality`:        OUT/quality.{json,md,png}
    SCENES.write_all(result, out)     # `genrecal-bench quality-scenes`: OUT/quality_scenes.{json,md,png}

Both compare distillation methods by accuracy mean ± sd over seeds and by the share of the teacher-SFT
gap they close. A run record of `quality` (genrecal.experiments.quality_runs) is one trained student:
{"name", "method", "seed", "accuracy", "by_kind", "in_kind", "train_seconds", "steps", "samples",
"overrides", "attention_mass"}; `name` is the method for the compared methods and the variant's name for
investigated GenRecal variants. A run record of `quality-scenes` (genrecal.experiments.quality_scenes_runs)
adds "regime", "easy_vqa", "seconds_per_step", "peak_rss_mb" and "shuffle_rise"; its summaries are per
regime.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

COMPARED = ("sft", "uld", "genrecal")
EASY_KINDS = ("yes_no", "shape", "color")
SCENE_KINDS = ("count", "color", "shape", "size", "relation", "describe", "exact")


@dataclass(frozen=True)
class Report:
    """One benchmark's report: `summarize(runs, teacher_acc)`, `verdict(summary, ...)`, `markdown(result)`,
    `plot(result, path)`; `write_all` writes OUT/`name`.{json,md,png}."""

    name: str
    summarize: Callable
    verdict: Callable
    markdown: Callable
    plot: Callable

    def write_all(self, result: dict, out: Path) -> dict[str, Path]:
        """Atomic writes (genrecal.benchmarks.results.write_report); returns {"json", "md"[, "png"]}."""
        from genrecal.benchmarks.results import write_report

        return write_report(result, out, self.name, self.markdown(result), self.plot)


# ---------------------------------------------------------------- shared by both reports
def gap_closed(acc: float, sft: float, teacher: float) -> float | None:
    """(method - sft) / (teacher - sft); None when the teacher does not beat SFT (nothing to close)."""
    gap = teacher - sft
    return None if gap <= 0 else (acc - sft) / gap


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return statistics.fmean(vals) if vals else None


def _seed_stats(rs: list[dict]) -> dict:
    acc, sd = mean_sd([r["accuracy"] for r in rs])
    return {"n_seeds": len(rs), "accuracy_mean": acc, "accuracy_sd": sd}


def _add_gap_closed(methods: dict[str, dict], teacher_acc: float) -> None:
    """Every method's share of the teacher - SFT gap, against the `sft` entry of the same table."""
    sft = methods.get("sft", {}).get("accuracy_mean")
    for s in methods.values():
        s["gap_closed"] = None if sft is None else gap_closed(s["accuracy_mean"], sft, teacher_acc)


def _targets(methods: dict[str, dict]) -> dict:
    """GenRecal > ULD > SFT, and GenRecal closing >= half the gap (None where a method is missing)."""
    acc = {m: methods[m]["accuracy_mean"] for m in COMPARED if m in methods}
    ordered = acc["genrecal"] > acc["uld"] > acc["sft"] if len(acc) == len(COMPARED) else None
    half = (methods["genrecal"]["gap_closed"] or 0.0) >= 0.5 if "genrecal" in methods and "sft" in methods else None
    return {"genrecal>uld>sft": ordered, "genrecal_closes_half_gap": half}


def _pct(x: float | None, sd: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if sd is None else f"{100 * x:.1f} ± {100 * sd:.1f}%"


def _kinds(by_kind: dict | None, kinds: tuple[str, ...], missing: str | None = None) -> str:
    """'80 / 70 / 90': per-kind percentages in `kinds` order; an absent kind is left out (missing None) or
    shown as `missing`."""
    by_kind = by_kind or {}
    cells = [f"{100 * by_kind[k]:.0f}" if k in by_kind else missing for k in kinds]
    return " / ".join(c for c in cells if c is not None)


def _figure(width: float):
    """(pyplot, figure, axes) on the file-only Agg backend (never needs a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, 4))
    return plt, fig, ax


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- `quality` (easy-vqa)
def _easy_summarize(runs: list[dict], teacher_acc: float) -> dict[str, dict]:
    """Per name (method or variant): accuracy mean/sd over seeds, gap closed, time, budget, mass."""
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r["name"] for r in runs):
        rs = [r for r in runs if r["name"] == name]
        stats = _seed_stats(rs)
        out[name] = {"method": rs[0]["method"], "n_seeds": stats["n_seeds"], "accuracy_mean": stats["accuracy_mean"],
                     "accuracy_sd": stats["accuracy_sd"],
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
    _add_gap_closed(out, teacher_acc)
    return out


def _easy_verdict(summary: dict, teacher_acc: float) -> dict:
    """The issue's targets, each True/False (all None when a compared method is missing)."""
    if not all(m in summary for m in COMPARED):
        return {"genrecal>uld>sft": None, "genrecal_closes_half_gap": None, "teacher_beats_sft_by_10": None}
    return {**_targets(summary), "teacher_beats_sft_by_10": teacher_acc - summary["sft"]["accuracy_mean"] >= 0.10}


def _mass(s: dict) -> str:
    if "attention_mass_distill" not in s:
        return "-"
    (a, _), (d, _) = s["attention_mass_align"], s["attention_mass_distill"]
    return f"{a:.2f} / {d:.2f}"


def _cached(model: dict) -> str:
    return " (cached)" if model.get("reused") else ""


def _in_kind(model: dict) -> str:
    return _kinds((model.get("in_kind") or {}).get("by_kind"), EASY_KINDS)


def _easy_markdown(result: dict) -> str:
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
        f"| teacher ({t['family']}) | {_pct(t['accuracy'])} | | {_kinds(t.get('by_kind'), EASY_KINDS)} | "
        f"{_in_kind(t)} | | "
        f"{t['train_seconds']:.0f}{_cached(t)} | {t['steps']} x {t['samples'] // t['steps']} | |",
        f"| question-only prior (no model) | {_pct(prior['accuracy'])} | | {_kinds(prior['by_kind'], EASY_KINDS)} "
        f"| | {gap(prior['accuracy'])} | | | |",
        f"| pretrained student (start) | {_pct(p['accuracy'])} | | {_kinds(p.get('by_kind'), EASY_KINDS)} | "
        f"{_in_kind(p)} | {gap(p['accuracy'])} "
        f"| {p['train_seconds']:.0f}{_cached(p)} | {p['steps']} x {p['samples'] // p['steps']} | |",
    ]
    for name, s in summ.items():
        per_seed = " ".join(_pct(r["accuracy"]) for r in result["runs"] if r["name"] == name)
        label = name if name in COMPARED else f"variant: {name}"
        lines.append(f"| {label} | {_pct(s['accuracy_mean'], s['accuracy_sd'])} | {per_seed} | "
                     f"{_kinds(s.get('by_kind_mean'), EASY_KINDS)} | {_kinds(s.get('in_kind_mean'), EASY_KINDS)} | "
                     f"{_pct(s['gap_closed'])} | {s['train_seconds_mean']:.0f} | "
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


def _easy_plot(result: dict, path: Path) -> Path:
    """Bars (mean, sd error bars, seeds as dots) per student; teacher as a line."""
    summ = result["summary"]
    names = ["pretrained"] + list(summ)
    means = [result["pretrained_student"]["accuracy"]] + [summ[n]["accuracy_mean"] for n in summ]
    sds = [0.0] + [summ[n]["accuracy_sd"] for n in summ]
    colors = ["#bbbbbb"] + ["#4c72b0" if n in COMPARED else "#8fb0d9" for n in summ]
    plt, fig, ax = _figure(max(5.0, 1.1 * len(names)))
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
    return _save(plt, fig, path)


# ---------------------------------------------------------------- `quality-scenes` (two regimes)
def _scenes_summarize(runs: list[dict], teacher_acc: float) -> dict[str, dict[str, dict]]:
    """regime -> method -> accuracy mean/sd over seeds, per kind, easy-vqa, s/step, peak RSS, gap closed
    (against that regime's `sft`: gold SFT in (a), SFT on teacher answers in (b))."""
    out: dict[str, dict[str, dict]] = {}
    for regime in dict.fromkeys(r["regime"] for r in runs):
        out[regime] = {}
        for name in dict.fromkeys(r["name"] for r in runs if r["regime"] == regime):
            rs = [r for r in runs if r["regime"] == regime and r["name"] == name]
            kinds = sorted({k for r in rs for k in r.get("by_kind", {})})
            out[regime][name] = {
                **_seed_stats(rs),
                "by_kind_mean": {k: statistics.fmean(r["by_kind"].get(k, 0.0) for r in rs) for k in kinds},
                "seconds_per_step": _mean([r.get("seconds_per_step") for r in rs]),
                "peak_rss_mb": _mean([r.get("peak_rss_mb") for r in rs]),
                "easy_vqa": _mean([(r.get("easy_vqa") or {}).get("accuracy") for r in rs]),
                "shuffle_rise_distill": _mean([((r.get("shuffle_rise") or {}).get("distill") or {}).get("mean")
                                               for r in rs])}
        _add_gap_closed(out[regime], teacher_acc)
    return out


def _scenes_verdict(summary: dict) -> dict[str, dict]:
    """The issue's targets per regime: GenRecal > ULD > SFT and GenRecal closing >= half the gap (None: missing)."""
    return {regime: _targets(methods) for regime, methods in summary.items()}


def _scene_kinds(by_kind: dict | None) -> str:
    return _kinds(by_kind, SCENE_KINDS[:6], missing="-")


def _yes(flag) -> str:
    return "**yes**" if flag else "**no**"


def criteria_lines(result: dict) -> list[str]:
    """The pre-registered regime criteria as a table: targets, and the measurements once there are some."""
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


def _scenes_markdown(result: dict) -> str:
    """Criteria first, then the models and one table per regime (PARTIAL while runs are still going)."""
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
        lines.append(f"| {label} | {_pct(sc.get('accuracy'))} | {_scene_kinds(sc.get('by_kind'))} | "
                     f"{_pct((sc.get('easy_vqa') or {}).get('accuracy'))} |")
    if result.get("teacher_answer_labels"):
        lab = result["teacher_answer_labels"]
        lines += ["", f"Regime (b) targets: the teacher's answers to the budget prompts are right {_pct(lab['accuracy'])}"
                      f" of the time ({lab['n']} prompts; made by {lab['tool']})."]
    summary = result.get("summary") or (_scenes_summarize(runs, t["scores"]["accuracy"]) if runs else {})
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
                         f"{_scene_kinds(m['by_kind_mean'])} | {_pct(m['easy_vqa'])} | {_pct(m['gap_closed'])} | "
                         f"{m['seconds_per_step'] or 0:.2f} | {m['peak_rss_mb'] or 0:.0f} | {rise} |")
    unmet = [k for k, v in (result.get("criteria") or {}).items() if isinstance(v, dict) and v.get("met") is False]
    if summary and unmet:
        lines += ["", f"**Regime criteria not met ({', '.join(unmet)})**: the comparison above is not the test the "
                      "criteria were fixed for; read the targets below with that in mind."]
    if summary:
        lines += ["", "Targets per regime: " + "; ".join(
            f"{r}: GenRecal > ULD > SFT **{v['genrecal>uld>sft']}**, half the gap closed "
            f"**{v['genrecal_closes_half_gap']}**" for r, v in _scenes_verdict(summary).items())]
    for name, why in result.get("skipped_methods", {}).items():
        lines.append(f"- not run: `{name}`: {why}")
    if result.get("wall_seconds"):
        reused = sum(bool(r.get("reused")) for r in runs)
        lines += ["", f"Wall time of this invocation{'' if summary else ' so far'}: {result['wall_seconds'] / 60:.1f} min"
                      + (f" ({reused} of {len(runs)} runs reused from an earlier invocation, not in it)." if reused
                         else ".")]
    return "\n".join(lines) + "\n"


def grouped_bars(summary: dict[str, dict[str, dict]], lines: dict[str, tuple[float, str, str]], path: Path,
                 ylabel: str = "held-out scene accuracy (%)", top: float | None = None) -> Path:
    """Bars (mean ± sd %) per method, one group per regime / budget of `summary`; `lines`: label -> (accuracy,
    colour, line style) drawn across; `top`: the y limit (None: 1.3 x the highest bar or line)."""
    names = list(dict.fromkeys(n for m in summary.values() for n in m))
    plt, fig, ax = _figure(max(6.0, 1.4 * len(names)))
    width = 0.8 / max(1, len(summary))
    for i, (regime, methods) in enumerate(summary.items()):
        xs = [j + i * width for j, n in enumerate(names) if n in methods]
        ax.bar(xs, [100 * methods[n]["accuracy_mean"] for n in names if n in methods], width,
               yerr=[100 * methods[n]["accuracy_sd"] for n in names if n in methods], capsize=3, label=regime)
    for label, (value, color, style) in lines.items():
        ax.axhline(100 * value, color=color, linestyle=style, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    highest = max([100 * v for v, _, _ in lines.values()]
                  + [100 * (m["accuracy_mean"] + m["accuracy_sd"]) for ms in summary.values() for m in ms.values()])
    ax.set_ylim(0, top if top is not None else min(100.0, 1.3 * highest + 1))
    ax.legend(loc="upper right", ncol=len(summary) + len(lines))  # above the bars and the lines
    return _save(plt, fig, path)


def _scenes_plot(result: dict, path: Path) -> Path | None:
    """Bars per method, one group per regime; teacher as a line."""
    summary = result.get("summary")
    if not summary:
        return None
    return grouped_bars(summary, {"teacher": (result["teacher"]["scores"]["accuracy"], "#c44e52", "--")}, path)


EASY_VQA = Report("quality", _easy_summarize, _easy_verdict, _easy_markdown, _easy_plot)
SCENES = Report("quality_scenes", _scenes_summarize, _scenes_verdict, _scenes_markdown, _scenes_plot)
