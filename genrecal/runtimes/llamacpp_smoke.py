"""A llama.cpp smoke decode in a child process, so a native crash becomes one clear line.

    from genrecal.runtimes.llamacpp_smoke import ensure_decodes
    info = ensure_decodes(Path("gguf-q4_k_m/model.gguf"), threads=2)
    info["cpu_features"]  # e.g. ["SSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", ...]

Why: llama-cpp-python compiles llama.cpp at install time, by default with `GGML_NATIVE=ON`
(`-march=native`). On x86-64 hosts with AMX (Sapphire Rapids and later) that build compiles in ggml's
AMX path, which segfaults in every decode on some hosts of that class (llama.cpp #20824). A segfault
in-process kills Python with no message. `LlamaCppSession` therefore first loads the same text GGUF
in a child process, prefills a short prompt and decodes two tokens (the quantised matmuls of the text
model are where ggml's AMX kernels run; the F16 mmproj is not smoke-tested, which keeps the check
~1-2 s instead of a full image encode); if the child
dies on a signal (SIGSEGV, SIGILL, SIGABRT) or hangs, the parent raises `LlamaCppCrash` naming the
backend, the library version, the CPU features the build uses, how it was built and how to rebuild.
One check per (files, threads) per process. `GENRECAL_LLAMACPP_SMOKE=0` skips it.

The child first prints `genrecal.runtimes.sysinfo.llama_cpp_info()` (the kernels compiled in, how the
library was built), so a crash message names the build even when the child dies.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from genrecal.runtimes.base import RuntimeError_
from genrecal.runtimes.sysinfo import build_record, llama_cpp_info, llama_cpp_version

SKIP_ENV = "GENRECAL_LLAMACPP_SMOKE"  # "0": skip the child-process check
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF"
REBUILD_HINT = ("rebuild it without the native/AMX path: `bash scripts/setup.sh` (genrecal's setup builds it with "
                f"{PORTABLE_CMAKE_ARGS} plus the AVX-512 kernels the CPU has, never AMX), or "
                f'`CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-deps --no-cache-dir '
                "--no-binary llama-cpp-python llama-cpp-python=={version}`")
DEFAULT_TIMEOUT_S = 300.0
_INFO_TAG = "GENRECAL-SMOKE-INFO "
_DONE_TAG = "GENRECAL-SMOKE-DONE "
_checked: dict[tuple, dict] = {}


class LlamaCppCrash(RuntimeError_):
    """llama.cpp died on a signal (or hung) in the child-process smoke decode."""


def _how_built(info: dict | None) -> str:
    record = (info or {}).get("build") or build_record()
    if record:
        return f"built by genrecal's setup with CMAKE_ARGS=\"{record.get('cmake_args', '')}\""
    return "not built by genrecal's setup (pip's default build is GGML_NATIVE=ON, i.e. -march=native)"


def crash_message(what: str, returncode: int | None, info: dict | None, stderr: str, timeout_s: float) -> str:
    """One line: which backend crashed how, with which build, and what to do."""
    version = (info or {}).get("llama_cpp_python") or llama_cpp_version()
    if returncode is None:
        how = f"did not finish a 2-token smoke decode of {what} in {timeout_s:.0f} s (hung)"
    else:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        how = f"crashed with {sig} in a smoke decode of {what} (run in a child process)"
    features = (info or {}).get("cpu_features")
    kernels = f"CPU kernels {', '.join(features)}" if features else "CPU kernels unknown (crashed before reporting)"
    amx = " (the AMX path is the known cause on this CPU class)" if features and any("AMX" in f for f in features) else ""
    last = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    detail = f"; its last message: {last[-1][:200]}" if last else ""
    return (f"llama.cpp backend (llama-cpp-python {version}) {how}; this build: {kernels}{amx}, {_how_built(info)}"
            f"{detail}. Fix: {REBUILD_HINT.format(version=version)}; or set {SKIP_ENV}=0 to skip this check")


def child_argv(request: dict) -> list[str]:
    """The command that runs the smoke decode (this module as a script, the request as JSON)."""
    return [sys.executable, "-m", "genrecal.runtimes.llamacpp_smoke", json.dumps(request)]


def run_child(argv: list[str], what: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Run `argv`; its result dict when it ends, LlamaCppCrash when it dies on a signal or hangs.

    The child prints `_INFO_TAG {json}` (build info) before touching the model, then `_DONE_TAG {json}`.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise LlamaCppCrash(crash_message(what, None, _tagged(out, _INFO_TAG), err, timeout_s)) from None
    info = _tagged(proc.stdout, _INFO_TAG)
    if proc.returncode < 0:
        raise LlamaCppCrash(crash_message(what, proc.returncode, info, proc.stderr, timeout_s))
    done = _tagged(proc.stdout, _DONE_TAG)
    if proc.returncode != 0 or done is None:
        # a Python-level error (a file llama.cpp refuses, ...): the in-process load that follows raises
        # it with its own message, so it is recorded here, not raised
        last = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {**(info or {}), "child_error": f"exit {proc.returncode}: {last[-1] if last else 'no message'}"}
    return {**(info or {}), **done}


def _tagged(stdout: str, tag: str) -> dict | None:
    lines = [ln[len(tag):] for ln in (stdout or "").splitlines() if ln.startswith(tag)]
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def ensure_decodes(model_path: Path, threads: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict | None:
    """Smoke-decode a text GGUF in a child process once per process; None when skipped by SKIP_ENV.

    Returns the child's build info + {"tokens": [2 greedy ids], "tokens_in": n}, or + {"child_error"}
    when the child raised a Python error (left to the in-process load to report). Raises
    LlamaCppCrash when the child died on a signal or did not finish within timeout_s seconds.
    """
    if os.environ.get(SKIP_ENV, "1") == "0":
        return None
    model_path = Path(model_path).resolve()
    key = (str(model_path), _stamp(model_path), int(threads))
    if key not in _checked:
        request = {"model": str(model_path), "threads": int(threads)}
        _checked[key] = run_child(child_argv(request), model_path.name, timeout_s)
    return _checked[key]


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _smoke(request: dict) -> dict:
    """In the child: load the text GGUF, prefill a short prompt, decode 2 greedy tokens."""
    import ctypes

    import llama_cpp
    import numpy as np

    print(_INFO_TAG + json.dumps(llama_cpp_info()), flush=True)
    llm = llama_cpp.Llama(request["model"], n_ctx=64, n_batch=64, n_threads=request["threads"],
                          n_threads_batch=request["threads"], n_gpu_layers=0, verbose=False)
    try:
        ids = llm.tokenize(b"What is in this picture?", add_bos=True, special=False)
        llm.eval(ids)
        tokens = []
        for _ in range(2):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, ctypes.c_int32(-1)),
                                           shape=(llm.n_vocab(),))
            tokens.append(int(logits.argmax()))
            llm.eval([tokens[-1]])
    finally:
        llm.close()
    return {"tokens": tokens, "tokens_in": len(ids)}


if __name__ == "__main__":
    result = _smoke(json.loads(sys.argv[1]))
    print(_DONE_TAG + json.dumps(result), flush=True)
