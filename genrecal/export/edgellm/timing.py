"""llm_inference's profile -> genrecal-bench's latency record (torch-free; runs on the device).

    python -m genrecal.export.edgellm.device_cli record ARTIFACT --profile jetson-orin-nano --json results/x.json

`llm_inference --dumpProfile --profileOutputFile results/profile.json` writes (Edge-LLM 0.11,
examples/llm profileFormatter): "prefill" {total_runs, reused_tokens, computed_tokens,
average_tokens_per_run, average_time_per_run_ms, tokens_per_second, average_time_per_token_ms},
"generation" {total_runs, generated_tokens, average_tokens_per_run, tokens_per_second,
average_time_per_token_ms}, "multimodal" {total_runs, total_images, total_image_tokens,
average_time_per_token_ms}, "stages" [{stage_id, total_runs, total_gpu_time_ms, average_time_per_run_ms,
gpu_time_stats {count, min_ms, max_ms, mean_ms, median_ms, p95_ms, p99_ms, stddev_ms}}] and
peak_gpu_memory_bytes / peak_gpu_memory_mb. Its console summary (--dumpProfile) prints the same figures
("=== LLM Prefill ===", "Tokens/Second: ...", "Peak GPU Memory: ... MB"); parse_console reads that when
no JSON was written. Times are GPU times per stage: TTFT here is vision + prefill (no tokenizer or image
decode), and "p90" holds Edge-LLM's p95 (it reports no p90).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from genrecal.artifacts import edgellm as layout
from genrecal.errors import GenrecalError

VISION_STAGES = ("vision_encoder", "multimodal_processing")  # 0.11 names the ViT stage first; older: the latter
PREFILL_STAGE, GENERATION_STAGE = "llm_prefill", "llm_generation"


class ProfileError(GenrecalError):
    """An llm_inference profile that lacks what the timing record needs."""


def _stage(profile: dict, names) -> dict | None:
    for name in (names,) if isinstance(names, str) else names:
        for s in profile.get("stages", []):
            if s.get("stage_id") == name and s.get("total_runs"):
                return s
    return None


def _stat(value: float, p: float | None = None) -> dict:
    p = value if p is None else p
    return {"median": float(value), "p90": float(p), "min": float(min(value, p)), "max": float(max(value, p)),
            "mean": float(value)}


def _from_stage(stage: dict | None, fallback: float) -> dict:
    if stage is None:
        return _stat(fallback)
    st = stage.get("gpu_time_stats") or {}
    return {"median": float(st.get("median_ms", stage["average_time_per_run_ms"])),
            "p90": float(st.get("p95_ms", stage["average_time_per_run_ms"])),
            "min": float(st.get("min_ms", stage["average_time_per_run_ms"])),
            "max": float(st.get("max_ms", stage["average_time_per_run_ms"])),
            "mean": float(st.get("mean_ms", stage["average_time_per_run_ms"]))}


def summary_from_profile(profile: dict) -> dict:
    """genrecal-bench's PHASES summary ({metric: {median, p90, min, max, mean}}) from profile.json."""
    pre, gen = profile.get("prefill"), profile.get("generation") or {}
    if not pre:
        raise ProfileError("the profile has no 'prefill' section: was llm_inference run with --dumpProfile "
                           "--profileOutputFile, and did any request succeed?")
    mm = profile.get("multimodal") or {}
    vis_stage = _stage(profile, VISION_STAGES)
    vis_fallback = (mm.get("average_time_per_token_ms", 0.0) * mm.get("total_image_tokens", 0)
                    / max(mm.get("total_runs", 1), 1))
    vision = _from_stage(vis_stage, vis_fallback)
    prefill = _from_stage(_stage(profile, PREFILL_STAGE), pre["average_time_per_run_ms"])
    ms_tok = float(gen.get("average_time_per_token_ms", 0.0))
    tokens_out = float(gen.get("average_tokens_per_run", 0.0)) + 1  # + the token sampled after prefill
    ttft = vision["median"] + prefill["median"]
    ttft_p = vision["p90"] + prefill["p90"]
    e2e = ttft + ms_tok * (tokens_out - 1)
    return {
        "load_ms": _stat(0.0), "preprocess_ms": _stat(0.0), "vision_encode_ms": vision, "prefill_ms": prefill,
        "prefill_tok_s": _stat(float(pre.get("tokens_per_second", 0.0))), "ttft_ms": _stat(ttft, ttft_p),
        "decode_ms_per_token": _stat(ms_tok), "decode_tok_s": _stat(float(gen.get("tokens_per_second", 0.0))),
        "e2e_ms": _stat(e2e, ttft_p + ms_tok * (tokens_out - 1)),
        "tokens_in": _stat(float(pre.get("average_tokens_per_run", 0.0))), "tokens_out": _stat(tokens_out),
        "peak_rss_mb": _stat(float(profile.get("peak_gpu_memory_mb", 0.0))),
    }


_CONSOLE = {  # section -> {label: key in the profile JSON}
    "LLM Prefill": {"Reused Tokens": "reused_tokens", "Computed Tokens": "computed_tokens",
                    "Average Tokens per Run": "average_tokens_per_run",
                    "Average Time per Run": "average_time_per_run_ms", "Tokens/Second": "tokens_per_second",
                    "Average Time per Token": "average_time_per_token_ms"},
    "LLM Generation": {"Generated Tokens": "generated_tokens", "Average Tokens per Run": "average_tokens_per_run",
                       "Tokens/Second": "tokens_per_second", "Average Time per Token": "average_time_per_token_ms"},
    "Multimodal Processing": {"Total Image Tokens": "total_image_tokens",
                              "Average Time per Token": "average_time_per_token_ms"},
}
_SECTION_KEY = {"LLM Prefill": "prefill", "LLM Generation": "generation", "Multimodal Processing": "multimodal"}
_RUNS = re.compile(r"^(.+?) - Total Runs: (\d+), Total GPU Time: ([\d.]+) ms, Average: ([\d.]+) ms")


def parse_console(text: str) -> dict:
    """The --dumpProfile console summary as the profile JSON's shape (sections, stages, peak memory)."""
    out: dict = {"stages": []}
    section = None
    for raw in text.splitlines():
        line = raw.split("]", 1)[-1].strip() if raw.lstrip().startswith("[") else raw.strip()
        head = re.match(r"^=== (.+?)(?: \(.*\))? ===$", line)
        if head:
            section = next((s for s in _CONSOLE if head.group(1).startswith(s)), None)
            if section:
                out.setdefault(_SECTION_KEY[section], {})
            continue
        runs = _RUNS.match(line)
        if runs:
            stage = {"LLM Prefill": PREFILL_STAGE, "LLM Generation": GENERATION_STAGE,
                     "Multimodal Processing": "multimodal_processing"}.get(runs.group(1), runs.group(1))
            out["stages"].append({"stage_id": stage, "total_runs": int(runs.group(2)),
                                  "total_gpu_time_ms": float(runs.group(3)),
                                  "average_time_per_run_ms": float(runs.group(4))})
            if section:
                out[_SECTION_KEY[section]]["total_runs"] = int(runs.group(2))
            continue
        mem = re.match(r"^Peak GPU Memory: ([\d.]+) MB", line)
        if mem:
            out["peak_gpu_memory_mb"] = float(mem.group(1))
        elif section and ":" in line:
            label, _, value = line.partition(":")
            key = _CONSOLE[section].get(label.strip())
            num = re.match(r"^\s*([\d.]+)", value)
            if key and num:
                out[_SECTION_KEY[section]][key] = float(num.group(1))
    if "prefill" in out:
        pre = out["prefill"]
        pre.setdefault("average_time_per_run_ms", pre.get("average_time_per_token_ms", 0.0)
                       * pre.get("average_tokens_per_run", 0.0))
    return out


def latency_record(profile: dict, artifact_info: dict, profile_name: str, device: dict, limits: dict | None = None,
                   label: str | None = None) -> dict:
    """A genrecal-bench latency result (results.py's shape) from one llm_inference profile."""
    from genrecal.artifacts.profiles import get_profile

    summary = summary_from_profile(profile)
    info = {**artifact_info, "runtime": "edgellm", "label": label or artifact_info.get("label") or
            f"student edgellm {artifact_info.get('precision', 'fp16')}"}
    return {"kind": "latency", "schema": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "artifact": info, "profile": get_profile(profile_name).as_dict(),
            "config": {"runtime": "edgellm", "threads": None, "runs": int(profile["prefill"].get("total_runs", 0)),
                       "edgellm_version": layout.VERSION, "limits": limits or {}},
            "device": device, "summary": summary, "runs": [], "text": "", "warnings": [
                "Edge-LLM reports GPU stage times: TTFT = vision + prefill (no image decode or tokenizer); "
                "p90 columns hold Edge-LLM's p95; peak RSS holds peak GPU memory (unified on Jetson)"],
            "energy": None, "peak_rss_mb": summary["peak_rss_mb"]["median"],
            "peak_gpu_memory_mb": float(profile.get("peak_gpu_memory_mb", 0.0)), "edgellm_profile": profile}


def write_record(art: Path, profile_name: str, out: Path | None = None, label: str | None = None) -> Path:
    """results/profile.json (or the console log results/inference.log) of an artifact -> a latency record."""
    from genrecal.artifacts.manifest import load_manifest
    from genrecal.runtimes import sysinfo

    art = Path(art)
    manifest = load_manifest(art)
    prof_path, log_path = art / layout.PROFILE_JSON, art / layout.RESULTS_DIR / "inference.log"
    if prof_path.is_file():
        profile = json.loads(prof_path.read_text())
    elif log_path.is_file():
        profile = parse_console(log_path.read_text())
    else:
        raise FileNotFoundError(f"neither {prof_path} nor {log_path}: run llm_inference first (./run.sh infer)")
    info = {"path": str(art.resolve()), "name": art.resolve().name, "format": manifest.format,
            "precision": manifest.precision, "family": manifest.family, "target": manifest.target,
            "role": "student", "size_mb": round(sum(f["size"] for f in manifest.files.values()) / 2**20, 2)}
    from genrecal.export.edgellm.device import manifest_model, plan_for

    limits = plan_for(manifest_model(art), profile_name)["limits"]  # what the bundle built for this profile
    record = latency_record(profile, info, profile_name, sysinfo.device_info(), limits, label)
    out = Path(out) if out else art / layout.RESULTS_DIR / f"latency-{record['device'].get('hostname', 'device')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out
