"""Merge latency and accuracy results (from here and from devices) into a Markdown report + PNGs.

    genrecal-bench report results/ bundle-phone/results/*.json --out report/

Writes `report.md` with tables (every phase's median/p90, decode speed relative to the torch
student on the same host, % of the bandwidth bound, accuracy, teacher vs student) and the plots
`latency_phases.png`, `accuracy_vs_decode.png` and `teacher_vs_student.png` (each only when the
results hold what it needs). Results are keyed by (label, host).
"""
from __future__ import annotations

import os
from pathlib import Path

from genrecal.benchmarks.results import load_results

PHASE_BARS = ("preprocess_ms", "vision_encode_ms", "prefill_ms", "decode_ms")  # stacked = end-to-end


def _key(r: dict) -> tuple[str, str]:
    return r["artifact"]["label"], r.get("device", {}).get("hostname", "?")


def _med(r: dict, metric: str) -> float:
    return r["summary"][metric]["median"]


def _decode_total_ms(r: dict) -> float:
    return _med(r, "decode_ms_per_token") * max(_med(r, "tokens_out") - 1, 0)


def _latest(results: list[dict], kind: str) -> dict[tuple[str, str], dict]:
    """One result per (label, host) of a kind; a later `created` wins."""
    out: dict[tuple[str, str], dict] = {}
    for r in sorted((r for r in results if r["kind"] == kind), key=lambda r: r.get("created", "")):
        out[_key(r)] = r
    return out


def write_report(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Read every result under `paths`, write OUT/report.md and its plots; returns report.md."""
    results = load_results(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lat, acc = _latest(results, "latency"), _latest(results, "accuracy")
    plots = [_plot_phases(lat, out), _plot_acc_vs_decode(lat, acc, out), _plot_teacher_student(lat, acc, out)]
    plots = [p for p in plots if p]
    lines = ["# genrecal-bench report", "", f"{len(results)} results from {len(_hosts(results))} host(s).", ""]
    lines += _devices_md(results) + _latency_md(lat) + _accuracy_md(acc, lat) + _teacher_student_md(lat, acc)
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    return md


def _hosts(results: list[dict]) -> list[str]:
    return sorted({r.get("device", {}).get("hostname", "?") for r in results})


def _devices_md(results: list[dict]) -> list[str]:
    rows, seen = [], set()
    for r in results:
        d = r.get("device", {})
        key = (d.get("hostname"), r["config"].get("threads"))
        if key in seen:
            continue
        seen.add(key)
        jet = d.get("jetson") or {}
        extra = ", ".join(f"{k} {v}" for k, v in jet.items() if v not in (None, False)) or "-"
        rows.append(f"| {d.get('hostname')} | {d.get('cpu_model')} | {d.get('cores_usable')} | "
                    f"{r['config'].get('threads')} | {d.get('ram_gb')} | {d.get('os')} | {extra} |")
    return ["## Devices", "", "| host | CPU | usable cores | threads | RAM GB | OS | Jetson |",
            "|---|---|---|---|---|---|---|", *rows, "", *_llama_builds_md(results)]


def _llama_builds_md(results: list[dict]) -> list[str]:
    """One line per (host, llama.cpp build): the CPU kernels that produced the llama.cpp figures."""
    lines = []
    for r in results:
        d, info = r.get("device", {}), r.get("device", {}).get("llama_cpp") or {}
        if not info.get("cpu_features"):
            continue
        flags = (info.get("build") or {}).get("cmake_args")
        line = (f"- {d.get('hostname')}: llama.cpp (llama-cpp-python {info.get('llama_cpp_python')}) CPU kernels "
                f"{', '.join(info['cpu_features'])}; " + (f"built with `{flags}`" if flags else "build flags unknown"))
        if line not in lines:
            lines.append(line)
    return lines + [""] if lines else []


def _baseline(lat: dict, host: str) -> dict | None:
    """The torch student (else any torch result) on `host`: the reference for speed-ups."""
    torch_runs = [r for (_, h), r in lat.items() if h == host and r["artifact"]["runtime"] == "torch"]
    students = [r for r in torch_runs if r["artifact"]["role"] == "student"]
    return (students or torch_runs or [None])[0]


def _latency_md(lat: dict) -> list[str]:
    if not lat:
        return []
    lines = ["## Latency (median / p90)", "",
             "| artifact | host | load ms | preprocess ms | vision ms | prefill ms | TTFT ms | decode tok/s | "
             "e2e ms | tokens in/out | peak RSS MB | vs torch | % of bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best_bw = _best_bandwidth(lat)
    for (label, host), r in lat.items():
        s = r["summary"]
        cell = lambda k: f"{s[k]['median']:.1f} / {s[k]['p90']:.1f}"  # noqa: E731
        base = _baseline(lat, host)
        ratio = _ratio(_med(r, "decode_tok_s"), _med(base, "decode_tok_s")) if base else "-"
        pct = _pct_of_bound(r, best_bw.get(host))
        lines.append(f"| {label} | {host} | {s['load_ms']['median']:.0f} | {cell('preprocess_ms')} | "
                     f"{cell('vision_encode_ms')} | {cell('prefill_ms')} | {cell('ttft_ms')} | "
                     f"{cell('decode_tok_s')} | "
                     f"{cell('e2e_ms')} | {s['tokens_in']['median']:.0f}/{s['tokens_out']['median']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {ratio} | {'-' if pct is None else f'{pct}%'} |")
    lines += ["", "Speed-ups are decode tok/s relative to the torch student on the same host. The bound is the "
              "host's best measured bandwidth (over all its results: one noisy measurement must not flatter a "
              "result) / bytes of decoder weights read per token (see bandwidth.py).", ""]
    return lines


def _best_bandwidth(lat: dict) -> dict[str, float]:
    best: dict[str, float] = {}
    for (_, host), r in lat.items():
        bw = r.get("roofline", {}).get("measured", {}).get("bandwidth_gbs")
        if bw:
            best[host] = max(best.get(host, 0.0), bw)
    return best


def _pct_of_bound(r: dict, bandwidth_gbs: float | None) -> float | None:
    weights = r.get("roofline", {}).get("weight_bytes_per_token")
    if not weights or not bandwidth_gbs or not _med(r, "decode_tok_s"):
        return None
    return round(100 * _med(r, "decode_tok_s") * weights / (bandwidth_gbs * 1e9), 1)


def _accuracy_md(acc: dict, lat: dict) -> list[str]:
    if not acc:
        return []
    lines = ["## Accuracy", "", "| artifact | host | data | n | exact match | VQA soft | decode tok/s |",
             "|---|---|---|---|---|---|---|"]
    for key, r in acc.items():
        lines.append(f"| {key[0]} | {key[1]} | {r['config']['data']} | {r['n']} | {r['exact_match']:.3f} | "
                     f"{r['vqa_soft_accuracy']:.3f} | {_decode_speed(key, acc, lat):.1f} |")
    return lines + [""]


def _decode_speed(key, acc: dict, lat: dict) -> float:
    """Decode tok/s for an accuracy result: its latency run's median if there is one."""
    r = lat.get(key) or acc[key]
    return _med(r, "decode_tok_s")


def _teacher_student_md(lat: dict, acc: dict) -> list[str]:
    rows = []
    for host in sorted({h for _, h in lat}):
        teachers = [r for (_, h), r in lat.items() if h == host and r["artifact"]["role"] == "teacher"]
        students = [r for (_, h), r in lat.items() if h == host and r["artifact"]["role"] == "student"]
        for t in teachers:
            for s in students:
                ta, sa = acc.get(_key(t)), acc.get(_key(s))
                accs = f"{ta['exact_match']:.3f} -> {sa['exact_match']:.3f}" if ta and sa else "-"
                rows.append(f"| {t['artifact']['label']} | {s['artifact']['label']} | {host} | "
                            f"{_ratio(_med(s, 'decode_tok_s'), _med(t, 'decode_tok_s'))} | "
                            f"{_ratio(s['peak_rss_mb'], t['peak_rss_mb'])} | {accs} |")
    if not rows:
        return []
    return ["## Teacher vs student", "", "| teacher | student | host | decode tok/s (student/teacher) | "
            "peak RSS (student/teacher) | exact match (teacher -> student) |", "|---|---|---|---|---|---|",
            *rows, ""]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"  # 0: not measured (e.g. the model stopped at once)


# ---- plots ----
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _plot_phases(lat: dict, out: Path) -> Path | None:
    if not lat:
        return None
    plt = _pyplot()
    labels = [f"{label} @ {host}" for label, host in lat]
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.5 * len(labels)))
    left = [0.0] * len(labels)
    for phase in PHASE_BARS:
        vals = [_decode_total_ms(r) if phase == "decode_ms" else _med(r, phase) for r in lat.values()]
        ax.barh(labels, vals, left=left, label=phase.replace("_ms", "").replace("_", " "))
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("median ms per request")
    ax.set_title("Latency per phase")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # outside: never hides a bar
    return _save(fig, plt, out / "latency_phases.png")


def _plot_acc_vs_decode(lat: dict, acc: dict, out: Path) -> Path | None:
    if not acc:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for key, r in acc.items():
        x, y = _decode_speed(key, acc, lat), r["exact_match"]
        ax.scatter([x], [y], marker="*" if r["artifact"]["role"] == "teacher" else "o", s=80)
        ax.annotate(f"{key[0]} @ {key[1]}", (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("decode tok/s (median)")
    ax.set_ylabel("exact match")
    ax.set_title("Accuracy vs decode speed")
    ax.grid(alpha=0.3)
    return _save(fig, plt, out / "accuracy_vs_decode.png")


def _plot_teacher_student(lat: dict, acc: dict, out: Path) -> Path | None:
    roles = {r["artifact"]["role"] for r in lat.values()}
    if not {"teacher", "student"} <= roles:
        return None
    plt = _pyplot()
    items = [(k, r) for k, r in lat.items() if r["artifact"]["role"] in ("teacher", "student")]
    names = [f"{k[0]}\n@ {k[1]}" for k, _ in items]
    colors = ["tab:red" if r["artifact"]["role"] == "teacher" else "tab:blue" for _, r in items]
    panels = [("decode tok/s", [_med(r, "decode_tok_s") for _, r in items]),
              ("peak RSS MB", [r["peak_rss_mb"] for _, r in items])]
    if any(k in acc for k, _ in items):
        panels.append(("exact match (0: not measured)", [acc[k]["exact_match"] if k in acc else 0.0 for k, _ in items]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.5))
    for ax, (title, vals) in zip(axes, panels):
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(title)
    fig.suptitle("Teacher (red) vs student (blue)")
    return _save(fig, plt, out / "teacher_vs_student.png")


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
