"""Where a decode step's time goes in an ONNX text decoder: onnxruntime's own profiler, per op type.

    rec = profile_decode("genrecal", "EXPORT/onnx-int4", threads=2, prompt=ids[:64], n=32, work=tmp)
    rec = profile_decode("genai", "WORK/genai-int4", threads=2, prompt=ids[:64], n=32, work=tmp)
    rec["per_token_ms"]   # wall, in model runs (every session), in kernels, per op type

One greedy run with onnxruntime's profiler on (`SessionOptions.enable_profiling`; for onnxruntime-genai
its session option `enable_profiling`) for every session the runtime uses. Per decode token: wall
clock (runtimes.base.DecodeClock), the `model_run` spans of every session (the prefill run excluded),
the kernels inside them by op type; wall - model runs = the runtime's own per-token work outside
onnxruntime (Python, feeds, KV cache copies, argmax). Profiling adds some overhead to every kernel.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from genrecal.runtimes.base import DecodeClock


def profile_decode(kind: str, path: Path, threads: int, prompt: np.ndarray, n: int, work: Path) -> dict:
    """kind: genrecal (genrecal's onnxruntime backend) | genai (onnxruntime-genai's generator)."""
    work.mkdir(parents=True, exist_ok=True)
    prefix = str(work / kind)
    clock = _run_genrecal(path, threads, prompt, n, prefix) if kind == "genrecal" else \
        _run_genai(path, threads, prompt, n, prefix)
    files = sorted(work.glob(f"{kind}*.json"))
    sessions = [summarize(json.loads(f.read_text())) for f in files]
    steps = max(clock.count - 1, 1)
    by_op: dict[str, float] = defaultdict(float)
    for s in sessions:
        for op, ms in s["decode_kernel_ms_by_op"].items():
            by_op[op] += ms / steps
    in_runs = sum(s["decode_model_run_ms"] for s in sessions) / steps
    kernels = sum(by_op.values())
    wall = clock.decode_ms_per_token
    return {"kind": kind, "threads": threads, "tokens": clock.count, "profiles": [f.name for f in files],
            "per_token_ms": {"wall": round(wall, 3), "model_runs": round(in_runs, 3), "kernels": round(kernels, 3),
                             "onnxruntime_outside_kernels": round(in_runs - kernels, 3),
                             "runtime_outside_onnxruntime": round(wall - in_runs, 3),
                             "by_op": {k: round(v, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}},
            "runs_per_token": round(sum(s["decode_runs"] for s in sessions) / steps, 2)}


def _run_genrecal(path: Path, threads: int, prompt: np.ndarray, n: int, prefix: str) -> DecodeClock:
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    rt = OnnxRuntime(path, threads=threads, profile_prefix=prefix)
    clock = DecodeClock()
    for _ in rt.steps({"input_ids": prompt[None].astype(np.int64)}, n):
        clock.token()
    for session in rt.sessions.values():
        session.end_profiling()
    return clock


def _run_genai(path: Path, threads: int, prompt: np.ndarray, n: int, prefix: str) -> DecodeClock:
    import onnxruntime_genai as og

    config = og.Config(str(path))
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "enable_profiling": prefix}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + n + 1, batch_size=1)
    gen = og.Generator(model, params)
    clock = DecodeClock()
    gen.append_tokens(prompt.astype(np.int32))
    for _ in range(n):
        gen.generate_next_token()
        clock.token()
    del gen, params, model  # the profile file is written when the session closes
    return clock


def summarize(events: list[dict]) -> dict:
    """One session's profile: its model_run spans after the first (the prefill), and the kernel time
    inside them by op type (ms, summed over those runs)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    decode = runs[1:]
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if any(a <= e["ts"] < b for a, b in decode):
            by_op[e.get("args", {}).get("op_name", "?")] += e["dur"] / 1e3
    return {"decode_runs": len(decode), "decode_model_run_ms": sum(b - a for a, b in decode) / 1e3,
            "decode_kernel_ms_by_op": dict(by_op)}
