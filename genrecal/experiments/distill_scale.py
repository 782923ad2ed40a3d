"""`genrecal-bench distill-scale`: what a GenRecal step costs next to SFT at real shapes.

    genrecal-bench distill-scale --work DIR [--batch-sizes 1,4] [--steps 3] [--samples 64]
                                 [--rss-samples 640] [--json FILE] [--md FILE]

Models (built once into DIR, reused by later invocations):
- teacher: Qwen2-VL-2B's shapes (28 x 1536 body, 32 x 1280 ViT, patch 14, 151,936-entry vocabulary),
  random weights saved in bfloat16, with the real Qwen2 tokenizer (llama.cpp's
  `ggml-vocab-qwen2.gguf` from the pinned llama-cpp-python sdist; Qwen2-VL's image tokens at their
  real ids) and Qwen2-VL's real pixel budget (3,136 to 12,845,056 pixels);
- student: the zoo's `small-smollm2` SmolVLM (SmolLM2-135M's real weights), saved in bfloat16.
Data: photos of 448-1024 px per side (crops of matplotlib's sample photo), LLaVA JSON.

Every figure comes from `genrecal-distill` itself, one child process per row (`--dtype bf16`, the
trainer's own per-step `seconds` in train_log.jsonl, median over the steps after the first), except
"teacher forward", which times `teacher_features` (the frozen forward every teacher-using step
runs) over the same micro-batches in a child. Peak RSS is the child's own VmHWM. The dry-run
doctor's memory estimate for the GenRecal run is printed next to the largest GenRecal stage's
peak RSS; one more GenRecal stage-2 run on --rss-samples samples shows RSS against dataset size.
Goals (README): GenRecal stage-2 step <= 1.15 x (teacher forward + SFT step); RSS flat in the
dataset size; the doctor's estimate within 25 % of the measured peak.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genrecal.errors import GenrecalError

QUESTIONS = (
    ("Describe this photo in one sentence.",
     "A portrait of a woman in a dark naval uniform with a white collar and a row of medals, "
     "photographed against a plain background."),
    ("What is the person wearing?", "A dark military uniform with insignia on the sleeves and a white shirt."),
    ("Where is the person looking?", "Straight at the camera."),
    ("Is this photo taken indoors or outdoors? Explain briefly.",
     "Indoors: the background is a plain studio backdrop with soft, even lighting."),
)
# (row name, genrecal-distill flags); "teacher forward" is timed by teacher_child
RUNS = (
    ("sft", ["--method", "sft"]),
    ("uld", ["--method", "uld"]),
    ("genrecal align (stage 1)", ["--method", "genrecal", "--stages", "align"]),
    ("genrecal distill (stage 2)", ["--method", "genrecal", "--stages", "distill"]),
    ("genrecal sft (stage 3)", ["--method", "genrecal", "--stages", "sft"]),
)
GOAL_RATIO, GOAL_ESTIMATE = 1.15, 0.25


@dataclass
class Row:
    name: str
    batch_size: int
    samples: int
    step_s: float  # median seconds per optimizer step after the first
    steps: int
    peak_rss_mb: float
    wall_s: float

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / self.step_s


def models(work: Path) -> tuple[Path, Path]:
    """The bf16 teacher (Qwen2-VL-2B shapes, real Qwen2 vocabulary) and student, built once."""
    import torch

    from genrecal import zoo
    from genrecal.export.gguf.converter import llama_cpp_source

    teacher, student = work / "teacher-qwen2_vl-2b", work / "student-smolvlm-small-smollm2"
    if not (teacher / "genrecal_zoo.json").is_file():
        vocab = llama_cpp_source() / "models" / "ggml-vocab-qwen2.gguf"
        zoo.build_to_dir("qwen2_vl", teacher, size="2b", vocab_gguf=vocab, dtype=torch.bfloat16)
    if not (student / "genrecal_zoo.json").is_file():
        zoo.build_to_dir("smolvlm", student, size="small-smollm2", dtype=torch.bfloat16)
    return teacher, student


def photos(root: Path, n: int, seed: int = 0) -> Path:
    """n JPEG photos, 448-1024 px per side (random crops of matplotlib's sample photo, resized),
    with LLaVA-layout questions and sentence answers; returns the data file."""
    import matplotlib.cbook
    from PIL import Image

    data = root / "data.json"
    if data.is_file():
        return data
    source = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        w, h = (rng.randrange(448, 1025, 16) for _ in range(2))
        cw, ch = (int(side * rng.uniform(0.6, 1.0)) for side in source.size)
        x, y = rng.randrange(source.width - cw + 1), rng.randrange(source.height - ch + 1)
        source.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BICUBIC).save(root / "images" / f"{i}.jpg",
                                                                               quality=90)
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        records.append({"image": f"images/{i}.jpg", "conversations": [
            {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]})
    data.write_text(json.dumps(records))
    return data


CHILD = ("import sys\nfrom genrecal.experiments.distill_scale import peak_rss_kb\nfrom genrecal.cli import main\n"
         "rc = main(sys.argv[1:])\nprint('peak_rss_kb', peak_rss_kb())\nsys.exit(rc)")


def peak_rss_kb() -> int:
    """This process's own peak RSS (kB): /proc's VmHWM, since Linux carries ru_maxrss over from the
    parent through exec (a child would report at least its parent's peak); ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class ScaleRunError(GenrecalError):
    """A child run of the benchmark failed; its whole output is kept in the log file named."""


def _child(code: str, args: list[str], log: Path) -> tuple[str, float, float]:
    """Run python -c CODE ARGS, its output kept in `log`; (stdout, peak RSS MB, wall seconds).
    Raises ScaleRunError with the child's last stderr line."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(args)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ScaleRunError(f"{' '.join(args[:1])} child exited {done.returncode}: {last} (full output: {log})")
    kb = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("peak_rss_kb"))
    return done.stdout, kb / 1024, time.perf_counter() - t0


def distill_row(name: str, method: list[str], common: dict, out: Path, batch: int, samples: int,
                steps: int) -> Row:
    """One `genrecal distill` child: median step seconds after the first, peak RSS."""
    if out.exists():  # a child killed before it wrote its row: measure afresh
        shutil.rmtree(out)
    run = {**common, "out": out, "batch_size": batch, "max_steps": steps, "limit": samples}
    _, rss, wall = _child(CHILD, ["distill", *flags(run), *method, "--no-progress"], out.with_suffix(".log"))
    seconds = [json.loads(line)["seconds"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    for weights in ("student", "checkpoints"):  # ~1 GB per row at these shapes; the log and config stay
        shutil.rmtree(out / weights, ignore_errors=True)
    timed = seconds[1:] or seconds
    return Row(name, batch, samples, statistics.median(timed), len(timed), rss, wall)


TEACHER_CHILD = ("import sys\nfrom genrecal.experiments.distill_scale import teacher_child\n"
                 "teacher_child(sys.argv[1])")


def flags(common: dict) -> list[str]:
    """{"teacher": T, "max_steps": 3} -> ["--teacher", T, "--max-steps", "3"]"""
    return [arg for key, val in common.items() for arg in (f"--{key.replace('_', '-')}", str(val))]


def teacher_row(common: dict, batch: int, samples: int, steps: int, log: Path) -> Row:
    """The frozen teacher's forward alone over the micro-batches a distill run draws, in a child."""
    spec = json.dumps({**common, "batch_size": batch, "limit": samples, "max_steps": steps})
    out, rss, wall = _child(TEACHER_CHILD, [spec], log)
    seconds = json.loads(next(line for line in out.splitlines() if line.startswith("[")))
    timed = seconds[1:] or seconds
    return Row("teacher forward", batch, samples, statistics.median(timed), len(timed), rss, wall)


def teacher_child(spec_json: str) -> None:
    """Child side of teacher_row: prints the seconds of each teacher forward and peak_rss_kb."""
    import torch

    from genrecal.distill.batches import RenderedPairs, StepOrder, batch_loader
    from genrecal.distill.config import load_config
    from genrecal.distill.launch import prepare, run_dtype
    from genrecal.distill.objective import teacher_features

    cfg = load_config(None, {**json.loads(spec_json), "method": "uld", "out": os.devnull})
    data = prepare(cfg, run_dtype(cfg), torch.device("cpu"), False)
    pairs = RenderedPairs(data.samples, data.student, data.teacher, data.max_length)
    order = StepOrder(len(pairs), cfg, 0, 1, 0, cfg.max_steps)
    pads = (data.student.tokenizer.pad_token_id, data.teacher.tokenizer.pad_token_id)
    seconds = []
    with torch.no_grad():
        for _, t_batch in batch_loader(pairs, order, pads, 0):
            t0 = time.perf_counter()
            teacher_features(data.teacher.model, t_batch)
            seconds.append(round(time.perf_counter() - t0, 4))
    print(json.dumps(seconds))
    print("peak_rss_kb", peak_rss_kb())


def doctor_estimate_gib(common: dict, batch: int, log: Path) -> float:
    """The dry-run doctor's per-process total for a GenRecal run at this batch size (GiB)."""
    out, _, _ = _child(CHILD, ["distill", *flags({**common, "batch_size": batch}), "--method", "genrecal",
                               "--dry-run"], log)
    match = re.search(r"total ~([0-9.]+) GiB", out)
    if match is None:
        raise ScaleRunError(f"no memory estimate in the dry run's output (see {log})")
    return float(match.group(1))


def measure(work: Path, batch_sizes: tuple[int, ...], steps: int, samples: int, rss_samples: int,
            teacher: Path | None = None, student: Path | None = None, say=print,
            rows_wanted: tuple[str, ...] | None = None) -> dict:
    """Every row at every batch size, the RSS-vs-dataset-size pair and the doctor's estimates.

    Rows finished by an earlier invocation with the same models and settings are read back from
    WORK/rows.jsonl, not re-measured (delete it to measure afresh). teacher/student: model dirs
    instead of the 2B-shaped pair (a quick check of the benchmark itself). rows_wanted: only these row
    names (None: all), e.g. to leave out a row whose memory the machine cannot hold."""
    from genrecal.runtimes.sysinfo import device_info

    if teacher is None or student is None:
        teacher, student = models(work)
    data = photos(work / f"photos-{max(samples, rss_samples)}", max(samples, rss_samples))
    common = {"teacher": str(teacher), "student": str(student), "data": str(data), "dtype": "bf16"}
    runs, done = work / "runs", _finished(work / "rows.jsonl")
    plan = [(name, method, batch, samples) for batch in batch_sizes
            for name, method in (("teacher forward", None), *RUNS)]
    plan.append((RUNS[3][0], RUNS[3][1], batch_sizes[0], rss_samples))
    if rows_wanted is not None:
        unknown = set(rows_wanted) - {"teacher forward", *(name for name, _ in RUNS)}
        if unknown:
            raise GenrecalError(f"unknown distill-scale rows: {', '.join(sorted(unknown))}")
        plan = [p for p in plan if p[0] in rows_wanted]
    rows = []
    for name, method, batch, n in plan:
        key = json.dumps([common["teacher"], common["student"], name, batch, n, steps])
        if key not in done:
            slug = f"{re.sub(r'[^a-z0-9]+', '-', name)}-b{batch}-n{n}-s{steps}"
            row = teacher_row(common, batch, n, steps, runs / f"{slug}.log") if method is None else \
                distill_row(name, method, common, runs / slug, batch, n, steps)
            done[key] = asdict(row)
            with (work / "rows.jsonl").open("a") as f:
                f.write(json.dumps({"key": key, "row": done[key]}) + "\n")
        rows.append(done[key])
        say(format_row(Row(**done[key])))
    estimates = {b: doctor_estimate_gib(common, b, runs / f"doctor-b{b}.log") for b in batch_sizes}
    return {"benchmark": "distill-scale", "rows": rows, "doctor_estimate_gib": estimates,
            "load_average": os.getloadavg(), "device": device_info(), "teacher": str(teacher),
            "student": str(student), "steps": steps}


def _finished(path: Path) -> dict:
    """key -> row of the rows an earlier invocation measured (a torn last line is ignored)."""
    done = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[entry["key"]] = entry["row"]
    return done


def format_row(row: Row) -> str:
    return (f"batch {row.batch_size} n={row.samples:<5} {row.name:<28} {row.step_s:8.2f} s/step "
            f"{row.samples_per_s:6.3f} samples/s  peak RSS {row.peak_rss_mb:8.0f} MB  ({row.wall_s:.0f} s)")


def summarise(record: dict) -> list[str]:
    """The goals, as measured: stage-2 ratio per batch size, RSS vs dataset size, doctor vs peak."""
    rows = [Row(**r) for r in record["rows"]]
    base_n = min(r.samples for r in rows)
    lines = []
    for batch in sorted({r.batch_size for r in rows}):
        at = {r.name: r for r in rows if r.batch_size == batch and r.samples == base_n}
        ratio = at[RUNS[3][0]].step_s / (at["teacher forward"].step_s + at["sft"].step_s)
        lines.append(f"batch {batch}: GenRecal stage-2 step / (teacher forward + SFT step) = {ratio:.3f} "
                     f"(goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
        peak = max(r.peak_rss_mb for r in at.values() if r.name.startswith("genrecal")) / 1024
        est = {int(k): v for k, v in record["doctor_estimate_gib"].items()}[batch]
        off = est / peak - 1
        lines.append(f"batch {batch}: doctor estimate {est:.2f} GiB vs measured peak RSS {peak:.2f} GiB "
                     f"({off:+.1%}; goal within {GOAL_ESTIMATE:.0%}: {'met' if abs(off) <= GOAL_ESTIMATE else 'NOT met'})")
    pair = [r for r in rows if r.name == RUNS[3][0] and r.batch_size == min(x.batch_size for x in rows)]
    small, large = min(pair, key=lambda r: r.samples), max(pair, key=lambda r: r.samples)
    lines.append(f"peak RSS, GenRecal stage 2 at batch {small.batch_size}: {small.samples} samples "
                 f"{small.peak_rss_mb:.0f} MB vs {large.samples} samples {large.peak_rss_mb:.0f} MB "
                 f"(ratio {large.peak_rss_mb / small.peak_rss_mb:.3f})")
    return lines


def format_markdown(record: dict) -> str:
    lines = ["| batch | samples | step | s / step | samples / s | peak RSS MB |", "|---|---|---|---|---|---|"]
    for r in (Row(**x) for x in record["rows"]):
        lines.append(f"| {r.batch_size} | {r.samples} | {r.name} | {r.step_s:.2f} | {r.samples_per_s:.3f} | "
                     f"{r.peak_rss_mb:.0f} |")
    load = ", ".join(f"{x:.2f}" for x in record["load_average"])
    return "\n".join(lines + ["", *(f"- {s}" for s in summarise(record)), f"- load average at the end: {load}"]) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--work", required=True, type=Path, help="models, photos and runs (models reused)")
    p.add_argument("--batch-sizes", default="1,4", help="comma list (default 1,4)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per row; the first is not timed")
    p.add_argument("--samples", type=int, default=64, help="dataset size of the timed rows")
    p.add_argument("--rss-samples", type=int, default=640, help="dataset size of the RSS comparison row")
    p.add_argument("--teacher", type=Path, help="teacher dir instead of the 2B-shaped one (checks the benchmark)")
    p.add_argument("--student", type=Path, help="student dir instead of small-smollm2 (with --teacher)")
    p.add_argument("--json", type=Path, help="write the record here")
    p.add_argument("--md", type=Path, help="write the Markdown table here")
    p.add_argument("--rows", help="comma list of row names to measure (default: all), e.g. "
                                  "'teacher forward,sft,genrecal distill (stage 2)'")


def run_from_args(args) -> int:
    from genrecal.benchmarks.results import write_json

    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    record = measure(args.work, batch_sizes, args.steps, args.samples, args.rss_samples, args.teacher,
                     args.student, say=lambda line: print(line, flush=True),
                     rows_wanted=tuple(r.strip() for r in args.rows.split(",")) if args.rows else None)
    text = format_markdown(record)
    print(text)
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    if args.md:
        args.md.write_text(text)
        print(f"wrote {args.md}")
    return 0
