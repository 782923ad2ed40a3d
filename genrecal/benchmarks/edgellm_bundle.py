"""The on-device bundle of an Edge-LLM artifact: build the engines, run them, check parity, time them.

    genrecal-bench bundle --artifact out/edgellm-fp16 --profile jetson-orin-nano --out bundle-nano
    # on the Jetson, with Edge-LLM 0.11.0's C++ tools built there (EDGELLM_BUILD=its build dir):
    #   cd bundle-nano && EDGELLM_BUILD=~/TensorRT-Edge-LLM/build ./run.sh
    # back here:      genrecal-bench report bundle-nano/results results/ --out report

make_bundle (bundle.py) hands edgellm artifacts here. run.sh steps (each alone, or all in order):
    check   the artifact's checksums and the three tools are there
    build   llm_build + visual_build, sized for the profile (device.plan_for; lines in bundle.json)
    infer   llm_inference on parity/input.json -> artifact/results/{output,profile}.json + inference.log
    parity  Edge-LLM's tokens vs the host's PyTorch references (parity.py): exit 1 and PARITY FAILED
    record  the profile -> results/latency-<host>.json, genrecal-bench's common latency record
Only the standard library and numpy are needed on the device (no torch): the copied genrecal/ source runs.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from genrecal.artifacts import edgellm as layout
from genrecal.artifacts.manifest import load_manifest
from genrecal.artifacts.profiles import get_profile
from genrecal.benchmarks.bundle_files import ALL_BACKENDS, NOT_ON_DEVICE, copy_modules, module_closure
from genrecal.benchmarks.results import genrecal_version
from genrecal.errors import GenrecalError
from genrecal.fsutil import atomic_dir

BUNDLE_FILE = "bundle.json"
JETSON_PROFILES = ("jetson-orin-nano", "jetson-agx-orin", "jetson-agx-thor")

RUN_SH = """#!/bin/sh
# genrecal Edge-LLM bundle ({label}, profile {profile}, TensorRT Edge-LLM {version}). From this folder:
#   EDGELLM_BUILD=<Edge-LLM {version} C++ build dir> ./run.sh [setup|check|build|infer|parity|record|all]
# The tools (llm_build, visual_build, llm_inference) are built from Edge-LLM's source at tag v{version} on
# this device; ONNX files and engines are tied to that version. Results: results/ (copy back and run
# genrecal-bench report). Override: PYTHON (default python3; needs numpy, no torch). setup = check.
# A failing step stops the run with its exit status (parity: 1 and "PARITY FAILED").
set -eu
cd "$(dirname "$0")"
PY="${{PYTHON:-python3}}"
export PYTHONPATH="$PWD${{PYTHONPATH:+:$PYTHONPATH}}"
WHAT=${{1:-all}}
HOST=$(hostname 2>/dev/null || echo device)
mkdir -p results artifact/results
step() {{ [ "$WHAT" = all ] || [ "$WHAT" = "$1" ] || {{ [ "$WHAT" = setup ] && [ "$1" = check ]; }}; }}
logged() {{  # run "$@" with its output in the file $LOG and on the screen; keep its exit status
  rc=0; "$@" > "$LOG" 2>&1 || rc=$?; cat "$LOG"
  [ "$rc" -eq 0 ] || {{ echo "step failed (exit $rc): $*" >&2; exit "$rc"; }}
}}
if step check; then
  "$PY" -m genrecal.export.edgellm.device_cli plan artifact --profile {profile} >/dev/null
  for t in {tools}; do
    tool="${{EDGELLM_BUILD:?set EDGELLM_BUILD to the Edge-LLM {version} build dir}}/$t"
    [ -x "$tool" ] || {{ echo "missing $tool" >&2; exit 2; }}
  done
  echo "check: artifact checksums ok, Edge-LLM tools found"
fi
cd artifact
if step build; then
  {llm_build}
  {visual_build}
fi
if step infer; then
  LOG=results/inference.log
  logged {llm_inference}
fi
cd ..
if step parity; then
  LOG=results/parity.txt
  logged "$PY" -m genrecal.export.edgellm.device_cli compare artifact
fi
if step record; then
  "$PY" -m genrecal.export.edgellm.device_cli record artifact --profile {profile} --label '{label}' \\
    --json "results/latency-$HOST.json"
fi
"""


def device_modules() -> dict:
    """The genrecal modules run.sh runs on the Jetson: device_cli and what it imports (no runtime backend:
    Edge-LLM's own C++ tools run the model)."""
    entry = "genrecal." + "export.edgellm.device_cli"  # a name to start from, not an import
    skip = tuple(name for name in NOT_ON_DEVICE if name != "genrecal.export") + ALL_BACKENDS
    return module_closure([entry], skip)


def make_edgellm_bundle(artifact: Path, profile: str, out: Path, label: str | None = None, log=print) -> Path:
    """Write the bundle folder atomically (see the module docstring); returns its path."""
    from genrecal.export.edgellm.device import TOOL_PATHS, plan_for

    artifact, out = Path(artifact), Path(out).resolve()
    prof = get_profile(profile)
    if prof.name not in JETSON_PROFILES:
        raise GenrecalError(f"an Edge-LLM bundle runs on a Jetson: pick --profile {' / '.join(JETSON_PROFILES)}, "
                            f"not {prof.name}")
    manifest = load_manifest(artifact)  # verifies every checksum before anything is copied
    if manifest.format != layout.FORMAT:
        raise GenrecalError(f"{artifact} is a {manifest.format!r} artifact, not an Edge-LLM one")
    device_precisions = layout.DEVICE_PRECISIONS["thor" if "thor" in prof.name else "orin"]
    if manifest.precision not in device_precisions:
        raise GenrecalError(f"{prof.name} cannot run Edge-LLM {manifest.precision} (it runs "
                            f"{', '.join(device_precisions)}); export another --precision")
    plan = plan_for({**manifest.extra["model"], "image_tokens": manifest.extra["image_tokens"]}, prof.name)
    label = label or f"student edgellm {manifest.precision}"
    if "'" in label or "\n" in label:
        raise GenrecalError(f"--label {label!r}: quotes and newlines cannot go into run.sh")
    for w in plan["warnings"]:
        log(f"warning: {w}")
    if out.exists() and any(out.iterdir()) and not (out / BUNDLE_FILE).is_file():
        raise GenrecalError(f"{out} exists and is not a genrecal bundle; not replacing it")
    with atomic_dir(out) as tmp:
        shutil.copytree(artifact, tmp / "artifact", ignore=shutil.ignore_patterns(".*", "engines", "results"))
        copy_modules(device_modules(), tmp)
        (tmp / "requirements.txt").write_text("numpy\n")
        script = RUN_SH.format(label=label, profile=prof.name, version=layout.VERSION,
                               tools=" ".join(TOOL_PATHS.values()), **plan["commands"])
        (tmp / "run.sh").write_text(script)
        (tmp / "run.sh").chmod(0o755)
        meta = {"profile": prof.name, "runtime": "edgellm", "role": "student", "label": label,
                "artifact": {"name": artifact.resolve().name, "format": manifest.format,
                             "precision": manifest.precision, "family": manifest.family, "target": manifest.target},
                "edgellm_version": layout.VERSION, "device_plan": plan, "source": str(artifact.resolve()),
                "genrecal": genrecal_version(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
