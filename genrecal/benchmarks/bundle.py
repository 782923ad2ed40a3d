"""An on-device bundle: a folder to copy to the device and run there with one script.

    genrecal-bench bundle --artifact out/export/gguf-q4_k_m --profile phone-class --out bundle-phone
    # on the device:  cd bundle-phone && ./run.sh setup && ./run.sh
    # back here:      genrecal-bench report bundle-phone/results results/ --out report

Layout:
    artifact/          the artifact, with its genrecal_manifest.json (written here for a bare HF dir)
    genrecal/          the genrecal modules the device commands import for this runtime, nothing else
                       (bundle_files.py: no distillation, export, experiments or demo code)
    requirements.txt   pip requirements of that runtime alone (no torch unless the runtime is torch)
    run.sh             `setup` makes .venv and installs the requirements; no argument: latency +
                       accuracy -> results/*.json (settings from bundle.json, env overrides)
    bundle.json        profile, runtime, label/role and how the bundle was made
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from genrecal.benchmarks.latency import pick_runtime
from genrecal.artifacts.profiles import get_profile
from genrecal.benchmarks.bundle_files import bundle_modules, copy_modules, runtime_requirements
from genrecal.benchmarks.results import artifact_info, genrecal_version
from genrecal.errors import GenrecalError
from genrecal.fsutil import atomic_dir
from genrecal.artifacts.manifest import MANIFEST_NAME, Manifest, dir_sha256, write_manifest

BUNDLE_FILE = "bundle.json"
# llama-cpp-python compiles at install; on x86-64 its default -march=native build segfaults on AMX CPUs
# (see genrecal.runtimes.llamacpp_smoke), so the bundle builds the portable baseline there, never from
# pip's wheel cache; ARM devices (phones, Jetson) keep the native build
LLAMA_SETUP = """  if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF"; PIP_ARGS="${PIP_ARGS:-} --no-cache-dir --no-binary llama-cpp-python"
  fi
"""

RUN_SH = """#!/bin/sh
# genrecal on-device bundle ({label}, profile {profile}). From this folder:
#   ./run.sh setup        once: python3 -m venv .venv, then pip install -r requirements.txt
#   ./run.sh [latency|accuracy|all]   default all: writes results/<kind>-<host>.json
# Overrides: PYTHON, VENV_ARGS, PIP_ARGS (setup); THREADS, RUNS, WARMUP, LIMIT, MAX_NEW_TOKENS.
# Copy results/ back and merge: genrecal-bench report results/ ... --out report/
set -eu
cd "$(dirname "$0")"
if [ "${{1:-}}" = setup ]; then
  [ -x .venv/bin/python ] || "${{PYTHON:-python3}}" -m venv ${{VENV_ARGS:-{venv_args}}} .venv
{llama_setup}  .venv/bin/python -m pip install ${{PIP_ARGS:-}} -r requirements.txt
  exit 0
fi
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY="${{PYTHON:-python3}}"; fi
export PYTHONPATH="$PWD${{PYTHONPATH:+:$PYTHONPATH}}"
HOST=$(hostname 2>/dev/null || echo device)
WHAT=${{1:-all}}
T=""
if [ -n "${{THREADS:-}}" ]; then T="--threads=$THREADS"; fi
mkdir -p results
if [ "$WHAT" = all ] || [ "$WHAT" = latency ]; then
  "$PY" -m genrecal.benchmarks.cli latency --artifact artifact --profile {profile} --runtime {runtime} \\
    --role {role} --label '{label}' $T --runs "${{RUNS:-5}}" --warmup "${{WARMUP:-1}}" \\
    --max-new-tokens "${{MAX_NEW_TOKENS:-32}}" --json "results/latency-$HOST.json"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = accuracy ]; then
  "$PY" -m genrecal.benchmarks.cli accuracy --artifact artifact --profile {profile} --runtime {runtime} \\
    --role {role} --label '{label}' $T --data easy-vqa --limit "${{LIMIT:-100}}" \\
    --json "results/accuracy-$HOST.json"
fi
echo "results: $PWD/results"
"""


def requirements(runtime: str) -> list[str]:
    """The pip requirements a bundle running `runtime` installs (bundle_files.runtime_requirements)."""
    return runtime_requirements(runtime)


def make_bundle(artifact: str | os.PathLike, profile: str, out: str | os.PathLike, runtime: str | None = None,
                role: str | None = None, label: str | None = None, log=print) -> Path:
    """Write the bundle folder atomically; returns its path."""
    from genrecal import runtimes

    if _is_edgellm(artifact):  # Edge-LLM's own C++ tools build and run it: a bundle of its own
        from genrecal.benchmarks.edgellm_bundle import make_edgellm_bundle

        return make_edgellm_bundle(Path(artifact), profile, Path(out), label, log)
    prof = get_profile(profile)
    manifest, _ = runtimes.describe(artifact)  # verifies every checksum before anything is copied
    runtime, warnings = pick_runtime(prof, runtime, str(artifact))
    info = artifact_info(artifact, runtime, role, label)
    if "'" in info["label"] or "\n" in info["label"]:
        raise GenrecalError(f"--label {info['label']!r}: quotes and newlines cannot go into run.sh")
    for w in warnings:
        log(f"warning: {w}")
    out = Path(out).resolve()
    _check_replaceable(out)
    with atomic_dir(out) as tmp:
        _fill(tmp, Path(artifact), manifest, prof.name, runtime, info)
    return out


def _is_edgellm(artifact) -> bool:
    path = Path(artifact) / MANIFEST_NAME
    return path.is_file() and json.loads(path.read_text()).get("format") == "edgellm"


def _fill(root: Path, artifact: Path, manifest: Manifest | None, profile: str, runtime: str, info: dict) -> None:
    shutil.copytree(artifact, root / "artifact", ignore=shutil.ignore_patterns(".*"))
    if manifest is None:  # a bare HF dir: give the copy a manifest so the device verifies it too
        write_manifest(root / "artifact", Manifest(format="hf", target="hf", family=info["family"] or "",
                                                   precision=info["precision"], source_sha256=dir_sha256(artifact)))
    copy_modules(bundle_modules(runtime), root)
    (root / "requirements.txt").write_text("\n".join(requirements(runtime)) + "\n")
    venv_args = "--system-site-packages" if runtime == "tensorrt" else ""
    script = RUN_SH.format(label=info["label"], profile=profile, runtime=runtime, role=info["role"],
                           venv_args=venv_args, llama_setup=LLAMA_SETUP if runtime == "llamacpp" else "")
    (root / "run.sh").write_text(script)
    (root / "run.sh").chmod(0o755)
    meta = {"profile": profile, "runtime": runtime, "role": info["role"], "label": info["label"],
            "artifact": {k: info[k] for k in ("name", "format", "precision", "family", "target", "size_mb")},
            "source": info["path"], "genrecal": genrecal_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (root / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / BUNDLE_FILE).is_file()):
        raise GenrecalError(f"{out} exists and is not a genrecal bundle; not replacing it")
    if (out / "artifact" / MANIFEST_NAME).is_file() and not (out / BUNDLE_FILE).is_file():
        raise GenrecalError(f"{out} looks like an artifact, not a bundle; choose another --out")
