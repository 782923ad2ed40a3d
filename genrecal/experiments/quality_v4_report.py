"""The written reports of `genrecal-bench quality-v4`: the gate (OUT/quality_v4_gate.{json,md}) and the
comparison (OUT/quality_v4.{json,md,png}). Every table carries the question-only prior beside the accuracies.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from genrecal.experiments.quality_report import _mean, _pct, grouped_bars, mean_sd

KINDS = ("count", "color", "shape", "size")


def _kinds(by_kind: dict | None) -> str:
    by_kind = by_kind or {}
    return " / ".join(f"{100 * by_kind[k]:.0f}" if k in by_kind else "-" for k in KINDS)


def _met(flag) -> str:
    return "(not measured yet)" if flag is None else "**yes**" if flag else "**no**"


def criteria_table(criteria: list[dict] | None) -> list[str]:
    lines = ["| # | criterion | target | measured | met |", "|---|---|---|---|---|"]
    return lines + [f"| {c['id']} | {c['criterion']} | {c['target']} | {c['measured']} | {_met(c['met'])} |"
                    for c in criteria or []]


def _models_table(prior: dict, teacher: dict, start: dict) -> list[str]:
    rows = [("question-only prior (image unseen)", prior, None), ("teacher (same tokenizer)", teacher["scores"], teacher),
            ("student start", start["scores"], start)]
    lines = [f"| model | held-out | {' / '.join(KINDS)} | answers in kind |", "|---|---|---|---|"]
    for name, s, _ in rows:
        lines.append(f"| {name} | {_pct(s['accuracy'])} | {_kinds(s['by_kind'])} | {_pct(s.get('in_kind'))} |")
    return lines


def gate_line(attempt: dict) -> str:
    g = attempt.get("gate")
    if not g:
        p = attempt.get("pilot") or {}
        return (f"gate not decided (pilot only): pilot kd {_pct(p.get('kd'))} vs sft {_pct(p.get('sft'))}, "
                f"prior {_pct(attempt['prior']['accuracy'])}")
    return (f"gate {'HOLDS' if g['holds'] else 'FAILS'}: kd {_pct(g['kd_mean'])} vs sft {_pct(g['sft_mean'])} "
            f"(margin {100 * g['margin']:+.1f} points, every kd seed above every sft seed: "
            f"{g['every_kd_above_every_sft']}); prior {_pct(attempt['prior']['accuracy'])}")


def _attempt_lines(i: int, a: dict) -> list[str]:
    changes = ", ".join(f"`{k}={v}`" for k, v in a["changes"].items()) or "none (the registered regime)"
    plan = a["plan"]
    lines = [f"## Attempt {i}: regime changes {changes}", "",
             f"B1: {plan['b1_images']} images x {plan['questions_per_image']} questions, {plan['b1_epochs']} epochs "
             f"= {plan['budget_steps']} steps of {plan['batch_size']}; teacher {plan['teacher_hidden']} wide x "
             f"{plan['teacher_layers']} layers, {plan['teacher_steps']} steps on {plan['teacher_images']} images; "
             f"KD temperature {plan['temperature']:g}; scenes of {plan['objects'][0]}-{plan['objects'][1]} objects.",
             "", *_models_table(a["prior"], a["teacher"], a["start"]), "",
             f"| method (B1) | per seed | mean ± sd | prior | {' / '.join(KINDS)} | in kind | s / step | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ("sft", "kd"):
        rs = [r for r in a["runs"] if r["name"] == name]
        if not rs:
            continue
        m, sd = mean_sd([r["accuracy"] for r in rs])
        kinds = {k: statistics.fmean(r["by_kind"].get(k, 0.0) for r in rs) for k in KINDS}
        seeds = " ".join(_pct(r["accuracy"]) for r in rs)
        lines.append(f"| {name} | {seeds} | {_pct(m, sd)} | "
                     f"{_pct(a['prior']['accuracy'])} | {_kinds(kinds)} | {_pct(_mean([r['in_kind'] for r in rs]))} | "
                     f"{_mean([r.get('seconds_per_step') for r in rs]) or 0:.2f} | "
                     f"{_mean([r.get('peak_rss_mb') for r in rs]) or 0:.0f} |")
    p = a.get("pilot")
    if p:
        lines += ["", f"Pilot (seed {a['seeds'][0]}): kd {_pct(p['kd'])} vs sft {_pct(p['sft'])}, "
                      f"{100 * p['margin']:+.1f} points."]
    lines += ["", f"**{gate_line(a)}**", "", "Criteria at this attempt:", "", *criteria_table(a.get("criteria")), ""]
    return lines


def gate_markdown(result: dict) -> str:
    lines = ["# Quality benchmark v4: the gate (positive control)", "",
             "Same-tokenizer teacher, `--method kd` vs `--method sft`, budget B1, same start, steps, lr and trained "
             "parts. Gate (pre-registered, benchmarks/results/quality_v4_criteria.md): KD - SFT >= 3 points (mean of "
             "the seeds) and every KD seed above every SFT seed. Attempts in the order run; each later attempt is a "
             "regime change decided from the criteria's and the gate's figures alone (no other method is run before "
             "the gate holds). Accuracy: held-out scenes, parsed answers.", ""]
    for i, a in enumerate(result["attempts"], 1):
        lines += _attempt_lines(i, a)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the comparison
def summarize(result: dict) -> dict[str, dict[str, dict]]:
    """budget -> method -> accuracy mean/sd, per kind, in kind, s/step, peak RSS, gap closed (vs the teacher and
    vs KD's gain over SFT)."""
    runs, teacher = result["runs"], result["teacher"]["scores"]["accuracy"]
    out: dict[str, dict[str, dict]] = {}
    for budget in dict.fromkeys(r["regime"] for r in runs):
        out[budget] = {}
        for name in dict.fromkeys(r["name"] for r in runs if r["regime"] == budget):
            rs = [r for r in runs if r["regime"] == budget and r["name"] == name]
            m, sd = mean_sd([r["accuracy"] for r in rs])
            out[budget][name] = {"accuracy_mean": m, "accuracy_sd": sd, "per_seed": [r["accuracy"] for r in rs],
                                 "by_kind_mean": {k: statistics.fmean(r["by_kind"].get(k, 0.0) for r in rs)
                                                  for k in KINDS},
                                 "in_kind": _mean([r["in_kind"] for r in rs]),
                                 "seconds_per_step": _mean([r.get("seconds_per_step") for r in rs]),
                                 "peak_rss_mb": _mean([r.get("peak_rss_mb") for r in rs])}
        methods = out[budget]
        sft = methods.get("sft", {}).get("accuracy_mean")
        kd = methods.get("kd", {}).get("accuracy_mean")
        for m in methods.values():
            a = m["accuracy_mean"]
            m["gap_closed"] = None if sft is None or teacher <= sft else (a - sft) / (teacher - sft)
            m["of_kd_gain"] = None if sft is None or kd is None or kd <= sft else (a - sft) / (kd - sft)
    return out


def verdict(summary: dict) -> dict[str, dict]:
    """Per budget: GenRecal > ULD > SFT, GenRecal closing >= half the teacher gap, GenRecal >= KD."""
    out = {}
    for budget, ms in summary.items():
        acc = {n: m["accuracy_mean"] for n, m in ms.items()}
        g = ms.get("genrecal", {})
        out[budget] = {
            "genrecal>uld>sft": None if not {"genrecal", "uld", "sft"} <= set(acc) else
            acc["genrecal"] > acc["uld"] > acc["sft"],
            "genrecal_closes_half_gap": None if g.get("gap_closed") is None else g["gap_closed"] >= 0.5,
            "genrecal>=kd": None if not {"genrecal", "kd"} <= set(acc) else acc["genrecal"] >= acc["kd"]}
    return out


def markdown(result: dict) -> str:
    summary = result.get("summary")
    lines = ["# Quality benchmark v4: methods at an equal budget (after the gate)", "",
             "" if summary else "**PARTIAL: runs still to come; the tables hold the finished runs.**", "",
             *_models_table(result["prior"], result["teacher"], result["start"]), "",
             f"Gate: {gate_line(result['gate']) if result.get('gate') else 'not run'}", "",
             "## Criteria", "", *criteria_table(result.get("criteria")), ""]
    summary = summary or summarize(result) if result["runs"] else {}
    for budget, ms in summary.items():
        lines += [f"## Budget {budget.upper()}", "",
                  f"| method | mean ± sd | per seed | prior | {' / '.join(KINDS)} | in kind | gap closed | of KD gain "
                  "| s / step | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in ms.items():
            lines.append(f"| {name} | {_pct(m['accuracy_mean'], m['accuracy_sd'])} | "
                         f"{' '.join(_pct(a) for a in m['per_seed'])} | {_pct(result['prior']['accuracy'])} | "
                         f"{_kinds(m['by_kind_mean'])} | {_pct(m['in_kind'])} | {_pct(m['gap_closed'])} | "
                         f"{_pct(m['of_kd_gain'])} | {m['seconds_per_step'] or 0:.2f} | {m['peak_rss_mb'] or 0:.0f} |")
        lines.append("")
    if summary:
        lines += ["Targets: " + "; ".join(f"{b}: " + ", ".join(f"{k} **{v}**" for k, v in t.items())
                                          for b, t in verdict(summary).items()), ""]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path | None:
    """Bars per method, one group per budget; teacher and prior as lines."""
    if not result.get("summary"):
        return None
    return grouped_bars(result["summary"], {"teacher": (result["teacher"]["scores"]["accuracy"], "#c44e52", "--"),
                                            "question-only prior": (result["prior"]["accuracy"], "#555555", ":")},
                        path, top=105.0)


def write_all(result: dict, out: Path) -> dict[str, Path]:
    from genrecal.benchmarks.results import write_report

    return write_report(result, out, "quality_v4", markdown(result), plot)
