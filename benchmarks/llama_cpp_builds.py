"""Decode speed of GGUF files under different llama-cpp-python builds (CMake flags), measured in one run.

    python benchmarks/llama_cpp_builds.py --work /tmp/llb \
        --variant avx2="-DGGML_NATIVE=OFF" \
        --variant avx512="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON" \
        --variant native="-DGGML_NATIVE=ON" \
        --gguf S/export/gguf-q4_k_m/model.gguf --gguf S/export/gguf-q8_0/model.gguf --threads 1,2 \
        --torch-model S/student

Each variant is built from the llama-cpp-python sdist with its CMAKE_ARGS (pip wheel --no-cache-dir
--no-binary, so pip's cache never substitutes another build; wheels kept in WORK/wheels/NAME) and
installed into its own venv WORK/venv-NAME, which sees the running interpreter's packages through a
.pth file. Every (file, threads, variant) is timed in a fresh child process of that venv, variants
interleaved so that load on the machine hits them alike:
  prefill 64 tokens of real text (this repository's README), then 128 single-token decodes
  teacher-forced on the text's next tokens (like llama-bench's tg128: the speed does not depend on
  when a random model would stop); decode tok/s = llama.cpp's own counter (llama_perf_context
  n_eval / t_eval_ms) where it counts, else wall-clock around the 128 `Llama.eval` calls; median of
  --repeats runs.
A child that dies on a signal is reported as such (e.g. the native build's AMX path: SIGSEGV).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path

VERSION = "0.3.36"
PROMPT_TOKENS, DECODE_TOKENS = 64, 128
ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import llama_cpp
from llama_cpp import Llama
path, threads, repeats, n_prompt, n_decode, text = json.loads(sys.argv[1])
print("INFO " + json.dumps(llama_cpp.llama_print_system_info().decode().strip()), flush=True)
llm = Llama(path, n_ctx=n_prompt + n_decode + 8, n_batch=512, n_threads=threads, n_threads_batch=threads,
            verbose=False)
ids = llm.tokenize(text.encode(), add_bos=True)[: n_prompt + n_decode]
assert len(ids) == n_prompt + n_decode, len(ids)
runs = []
for _ in range(repeats):
    llm.reset(); llm._ctx.kv_cache_clear()
    llm.eval(ids[:n_prompt])
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    t0 = time.perf_counter()
    for tok in ids[n_prompt:]:
        llm.eval([tok])
    wall = time.perf_counter() - t0
    p = llama_cpp.llama_perf_context(llm._ctx.ctx)
    perf = 1e3 * p.n_eval / p.t_eval_ms if p.n_eval and p.t_eval_ms else None
    runs.append({"tok_s": perf or n_decode / wall, "source": "llama_perf" if perf else "wall", "wall_tok_s": n_decode / wall})
print("DONE " + json.dumps(runs), flush=True)
"""


TORCH_CHILD = r"""
import json, sys, time
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer
path, threads, repeats, n_prompt, n_decode, text = json.loads(sys.argv[1])
torch.set_num_threads(threads)
model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
ids = AutoTokenizer.from_pretrained(path)(text, return_tensors="pt").input_ids[:, : n_prompt + n_decode]
assert ids.shape[1] == n_prompt + n_decode, ids.shape
runs = []
with torch.inference_mode():
    for _ in range(repeats):
        out = model(input_ids=ids[:, :n_prompt], use_cache=True)
        past = out.past_key_values
        t0 = time.perf_counter()
        for i in range(n_prompt, n_prompt + n_decode):
            out = model(input_ids=ids[:, i : i + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
        runs.append({"tok_s": n_decode / (time.perf_counter() - t0), "source": "wall"})
print("DONE " + json.dumps(runs), flush=True)
"""


def build_variant(work: Path, name: str, cmake_args: str) -> Path:
    """WORK/venv-NAME/bin/python with llama-cpp-python built with `cmake_args` (built once, reused)."""
    wheels, venv = work / "wheels" / name, work / f"venv-{name}"
    stamp = venv / "genrecal-llama-cpp-build.json"
    record = {"llama_cpp_python": VERSION, "cmake_args": cmake_args, "machine": os.uname().machine}
    if stamp.is_file() and json.loads(stamp.read_text()) == record:
        return venv / "bin" / "python"
    if not list(wheels.glob("*.whl")):
        print(f"[{name}] building llama-cpp-python {VERSION} with CMAKE_ARGS={cmake_args!r} ...", flush=True)
        env = {**os.environ, "CMAKE_ARGS": cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1)}
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-cache-dir", "--no-binary",
                        "llama-cpp-python", f"llama-cpp-python=={VERSION}", "-w", str(wheels)], env=env, check=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(next(wheels.glob("*.whl")))], check=True)
    # the venv's own llama_cpp first, then this interpreter's packages (numpy, ...) for its dependencies
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "parent-env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    stamp.write_text(json.dumps(record))
    return py


def time_decode(py: Path, model: Path, threads: int, repeats: int, text: str, child: str = CHILD) -> dict:
    arg = json.dumps([str(model), threads, repeats, PROMPT_TOKENS, DECODE_TOKENS, text])
    proc = subprocess.run([str(py), "-c", child, arg], capture_output=True, text=True, timeout=1800)
    lines = {ln.split(" ", 1)[0]: json.loads(ln.split(" ", 1)[1]) for ln in proc.stdout.splitlines()
             if ln.split(" ", 1)[0] in ("INFO", "DONE")}
    out = {"system_info": lines.get("INFO")}
    if proc.returncode < 0:
        return {**out, "crashed": signal.Signals(-proc.returncode).name}
    if proc.returncode or "DONE" not in lines:
        return {**out, "error": (proc.stderr.strip().splitlines() or ["no message"])[-1]}
    runs = lines["DONE"]
    return {**out, "runs": runs, "tok_s": statistics.median(r["tok_s"] for r in runs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="wheels, venvs and results.json go here")
    p.add_argument("--variant", action="append", required=True, help='NAME="CMAKE ARGS" (repeatable)')
    p.add_argument("--gguf", action="append", type=Path, required=True, help="a text-model GGUF (repeatable)")
    p.add_argument("--torch-model", type=Path, help="an HF VLM dir: its text model timed the same way in "
                   "PyTorch fp32 eager (this interpreter), as the reference")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    variants = dict(v.split("=", 1) for v in args.variant)
    text = (ROOT / "README.md").read_text()
    pys = {name: build_variant(args.work, name, flags) for name, flags in variants.items()}
    results = []
    for threads in (int(t) for t in args.threads.split(",")) if args.torch_model else ():
        r = time_decode(Path(sys.executable), args.torch_model, threads, args.repeats, text, TORCH_CHILD)
        results.append({"variant": "torch fp32 eager", "gguf": str(args.torch_model), "threads": threads, **r})
        print(f"torch fp32 eager threads {threads}  {r.get('tok_s', r.get('error'))}", flush=True)
    for gguf in args.gguf:
        for threads in (int(t) for t in args.threads.split(",")):
            for name, py in pys.items():
                r = time_decode(py, gguf, threads, args.repeats, text)
                results.append({"variant": name, "cmake_args": variants[name], "gguf": str(gguf), "threads": threads, **r})
                speed = f"{r['tok_s']:.1f} tok/s" if "tok_s" in r else r.get("crashed") or r.get("error")
                print(f"{gguf.parent.name:14s} threads {threads}  {name:8s} {speed}", flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table([r for r in results if r["variant"] in variants], list(variants)))
    for r in results:
        if r["variant"] == "torch fp32 eager":
            print(f"torch fp32 eager, {r['threads']} threads: {r.get('tok_s', 0):.1f} tok/s")
    return 0


def table(results: list[dict], names: list[str]) -> str:
    """Markdown: one row per (file, threads), one column per variant, ratios to the first variant."""
    head = "| GGUF | threads | " + " | ".join(names) + " |"
    rows = [head, "|" + "---|" * (2 + len(names))]
    keys = dict.fromkeys((r["gguf"], r["threads"]) for r in results)
    for gguf, threads in keys:
        cells = {r["variant"]: r for r in results if (r["gguf"], r["threads"]) == (gguf, threads)}
        base = cells[names[0]].get("tok_s")
        out = []
        for n in names:
            r = cells[n]
            if "tok_s" in r:
                out.append(f"{r['tok_s']:.1f}" + (f" ({r['tok_s'] / base:.2f}x)" if base and n != names[0] else ""))
            else:
                out.append(r.get("crashed") or "error")
        rows.append(f"| {Path(gguf).parent.name} | {threads} | " + " | ".join(out) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
