"""Latency of one artifact through its runtime: warm-up, then N timed runs of one request.

    genrecal-bench latency --artifact out/export/onnx-int8 --threads 2 --runs 5 --json lat.json

Reports the median and p90 of every phase (load, preprocess, vision encode, prefill, TTFT,
decode, end-to-end), tokens in/out, peak RSS, the device, board energy per token where tegrastats
runs, and decode tok/s as a percentage of the memory-bandwidth bound (see bandwidth.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genrecal.benchmarks import bandwidth
from genrecal.artifacts.profiles import Profile, get_profile
from genrecal.benchmarks.results import SCHEMA, artifact_info, computed_as, provenance, summarize
from genrecal.errors import GenrecalError
from genrecal.runtimes import BACKENDS
from genrecal.runtimes.torch_device import DEVICES, DTYPES

ITEMSIZE = {"fp32": 4, "bf16": 2, "fp16": 2}  # bytes per weight element a torch-run model holds
ROLES = ("teacher", "student", "model")  # a result's role, for the report's teacher vs student
PHASES = ("load_ms", "preprocess_ms", "vision_encode_ms", "prefill_ms", "prefill_tok_s", "ttft_ms",
          "decode_ms_per_token", "decode_tok_s", "e2e_ms", "tokens_in", "tokens_out", "peak_rss_mb")


@dataclass
class LatencyConfig:
    artifact: str
    """Artifact dir: an HF model dir or one `genrecal-export` output (e.g. OUT/onnx-int8)."""
    runtime: str | None = field(default=None, metadata={"choices": tuple(BACKENDS)})
    """Runtime; default: the profile's if the artifact's format allows it, else the format's."""
    threads: int | None = None
    """CPU threads; default: the profile's (host: every usable core)."""
    device: str | None = field(default=None, metadata={"choices": DEVICES})
    """torch runtime only: where to compute (None: auto = CUDA if present)."""
    dtype: str | None = field(default=None, metadata={"choices": tuple(DTYPES)})
    """torch runtime only: compute dtype (None: auto = the checkpoint's on CUDA, fp32 on CPU)."""
    profile: str = "host"
    """Device profile (genrecal.artifacts.profiles; an unknown name lists them)."""
    warmup: int = 1
    """Untimed runs first (allocators, caches, lazy graph init)."""
    runs: int = 5
    """Timed runs; the result gives the median and p90 of each phase."""
    max_new_tokens: int = 32
    """Tokens generated per run."""
    image: str | None = None
    """Request image; default: the first easy-vqa test question's image."""
    prompt: str | None = None
    """Request text; default: that easy-vqa question."""
    role: str | None = field(default=None, metadata={"choices": ROLES})
    """For the report's teacher vs student (default: student for exports, model for HF dirs)."""
    label: str | None = None
    """Name in reports (default: '<role> <runtime> <precision>')."""
    measure_bandwidth: bool = field(default=True, metadata={"flag": "--no-bandwidth"})
    """Measure DRAM bandwidth here after the runs, for the roofline percentage (~2 s, 512 MiB)."""

    def __post_init__(self):
        if self.warmup < 0:
            raise GenrecalError(f"--warmup must be >= 0, got {self.warmup}")
        if self.runs < 1:
            raise GenrecalError(f"--runs must be >= 1, got {self.runs}")
        if self.max_new_tokens < 1:
            raise GenrecalError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.threads is not None and self.threads < 1:
            raise GenrecalError(f"--threads must be >= 1, got {self.threads}")


def default_request(image: str | None = None, prompt: str | None = None) -> tuple[str, str]:
    """(image path, question): the given ones, else easy-vqa's first test question (seed 0)."""
    if image is None or prompt is None:
        from genrecal.data import load_easy_vqa_questions

        question, _answer, path = load_easy_vqa_questions("test", limit=1, seed=0)[0]
        image = image or str(path)
        prompt = prompt or question
    return image, prompt


def pick_runtime(profile: Profile, runtime: str | None, artifact: str) -> tuple[str | None, list[str]]:
    """The runtime to use and warnings when the artifact is not what the profile ships."""
    from genrecal import runtimes

    manifest, default = runtimes.describe(artifact, verify=False)
    fmt = manifest.format if manifest else "hf"
    warnings = []
    if runtime is None and profile.runtime in runtimes.FORMAT_RUNTIMES[fmt]:
        runtime = profile.runtime
    if profile.artifact and Path(artifact).name != profile.artifact:
        warnings.append(f"profile {profile.name} ships {profile.artifact}; measuring {Path(artifact).name} instead")
    return runtime or default, warnings


def pick_threads(profile: Profile, threads: int | None, warnings: list[str]) -> int | None:
    """--threads, else the profile's, capped at the cores usable here (more would only oversubscribe)."""
    if threads is not None or profile.threads is None:
        return threads
    usable = _usable_cores()
    if profile.threads > usable:
        warnings.append(f"profile {profile.name} uses {profile.threads} threads; this machine has {usable} usable "
                        f"cores, so {usable} are used")
        return usable
    return profile.threads


def run_latency(cfg: LatencyConfig, log=print) -> dict:
    """Load, warm up, time `cfg.runs` requests; returns the result record (see results.py)."""
    from genrecal import runtimes
    from genrecal.runtimes import sysinfo

    profile = get_profile(cfg.profile)
    runtime, warnings = pick_runtime(profile, cfg.runtime, cfg.artifact)
    threads = pick_threads(profile, cfg.threads, warnings)
    info = artifact_info(cfg.artifact, runtime, cfg.role, cfg.label)
    image, prompt = default_request(cfg.image, cfg.prompt)
    rt = runtimes.load(cfg.artifact, runtime, threads, device=cfg.device, dtype=cfg.dtype)
    info = computed_as(info, rt, cfg.label)
    for i in range(cfg.warmup):
        rt.generate([image], prompt, cfg.max_new_tokens)
    timings, text = [], ""
    with sysinfo.PowerSampler() as power:
        for i in range(cfg.runs):
            gen = rt.generate([image], prompt, cfg.max_new_tokens)
            timings.append(gen.timing.as_dict())
            text = gen.text
            log(f"  run {i + 1}/{cfg.runs}: ttft {gen.timing.ttft_ms:.0f} ms, "
                f"decode {gen.timing.decode_tok_s:.1f} tok/s")
    tokens = sum(t["tokens_out"] for t in timings)
    at_context = next((t["extra"] for t in timings if t["extra"].get("stop") == "context"), None)
    if at_context:  # every runtime stops there alike (runtimes.base.new_token_budget)
        warnings.append(f"{at_context['stop_note']}: decode was timed over fewer tokens than --max-new-tokens")
    if min(t["tokens_out"] for t in timings) < 2:
        warnings.append("decode speed not measured: the model stopped after fewer than 2 new tokens; use a "
                        "--prompt that makes it answer at length")
    summary = {k: summarize([t[k] for t in timings]) for k in PHASES}
    summary["load_ms"] = summarize([float(getattr(rt, "load_ms", timings[0]["load_ms"]))])
    result = {
        "kind": "latency", "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": info, "profile": profile.as_dict(), "genrecal": provenance(),
        "config": {**asdict(cfg), "runtime": runtime, "threads": getattr(rt, "threads", threads),
                   "image": str(image), "prompt": prompt},
        "device": sysinfo.device_info(getattr(rt, "threads", threads)),
        "summary": summary, "runs": timings, "text": text, "warnings": warnings,
        "energy": power.summary(tokens),
        "peak_rss_mb": max(t["peak_rss_mb"] for t in timings),
    }
    used = getattr(rt, "threads", threads) or _usable_cores()  # onnxruntime's default: one per core
    result["roofline"] = roofline_record(cfg, info, profile, summary["decode_tok_s"]["median"], used)
    return result


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def roofline_record(cfg: LatencyConfig, info: dict, profile: Profile, decode_tok_s: float, threads: int = 1) -> dict:
    """Decode tok/s vs the bandwidth bound, measured here with `threads` threads (as many as the run
    used) over the decoder weights in the dtype they are run in (and with the profile's nominal figure)."""
    if info.get("device") == "cuda":
        return {"error": "computed on CUDA: the host memory bandwidth measured here does not bound it"}
    itemsize = ITEMSIZE.get(info["precision"]) if "checkpoint_precision" in info else None
    level = "basic" if info.get("format") == "onnx" and info.get("precision") == "fp16" else "all"
    try:
        weights = bandwidth.weight_bytes_per_token(cfg.artifact, info["format"], info["files"], itemsize, level)
    except (GenrecalError, OSError, ValueError) as exc:
        return {"error": f"cannot size the decoder weights: {exc}"}
    out = {"weight_bytes_per_token": weights["bytes"], "weight_source": weights["source"]}
    if cfg.measure_bandwidth:
        measured = bandwidth.measure_bandwidth(threads=threads)
        out["measured"] = measured
        out.update(bandwidth.roofline(decode_tok_s, measured["bandwidth_gbs"], weights["bytes"]))
    if profile.bandwidth_gbs:
        nominal = bandwidth.roofline(decode_tok_s, profile.bandwidth_gbs, weights["bytes"])
        out["nominal"] = {"bandwidth_gbs": profile.bandwidth_gbs, **nominal}
    return out


def format_latency(result: dict) -> str:
    """A plain-text table of one latency result."""
    a, s = result["artifact"], result["summary"]
    lines = [f"{a['label']}  ({a['format']} {a['precision']}, {a['runtime']}, "
             f"{result['config']['threads']} threads, {len(result['runs'])} runs)",
             f"{'metric':22s} {'median':>12s} {'p90':>12s}"]
    lines += [f"{k:22s} {s[k]['median']:12.2f} {s[k]['p90']:12.2f}" for k in PHASES]
    roof = result.get("roofline", {})
    if roof.get("pct_of_bound") is not None:
        lines.append(f"decode bound {roof['bound_tok_s']:.1f} tok/s at {roof['measured']['bandwidth_gbs']} GB/s "
                     f"over {roof['weight_bytes_per_token'] / 2**20:.1f} MiB/token -> {roof['pct_of_bound']}% of bound")
    if result.get("energy"):
        lines.append(f"energy {result['energy']['energy_per_token_j']} J/token "
                     f"(mean {result['energy']['mean_power_w']} W)")
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
