"""Device bundle footprint: files shipped and what `run.sh setup` installs, for one artifact per runtime.

    .venv/bin/python benchmarks/bundle_footprint.py --out benchmarks/results/bundle_footprint.json \
        [--genrecal-src DIR]   # another checkout's genrecal (e.g. a git worktree of an older commit)

For each of ONNX int8 and GGUF Q4_K_M of the tiny zoo SmolVLM: make the bundle with the genrecal found on
PYTHONPATH / --genrecal-src, measure its size (the genrecal/ folder and in all), then make a fresh venv,
run the bundle's `run.sh setup` (pip install -r requirements.txt from this machine's package index, with
pip's cache emptied first) and time it; then the venv's size and whether torch got installed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def du_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 2)


def make_artifacts(root: Path, python: str, env: dict) -> dict[str, Path]:
    code = f"""
from pathlib import Path
from genrecal import zoo
from genrecal.export.onnx import OnnxBuild
from genrecal.export.gguf import export_gguf
root = Path({str(root)!r})
s = zoo.build_to_dir("smolvlm", root / "student", size="tiny", seed=0)
OnnxBuild(s, root / ".work", check=False).build(root / "onnx-int8", "int8", "cpu")
export_gguf(s, root / "gguf-q4_k_m", "q4_k_m", check=False)
"""
    subprocess.run([python, "-c", code], check=True, env=env, capture_output=True)
    return {"onnxruntime": root / "onnx-int8", "llamacpp": root / "gguf-q4_k_m"}


def _use_src(src: str | None) -> str:
    """Code that makes `import genrecal` find the checkout at `src` (ahead of the editable install's finder)."""
    if not src:
        return ""
    return (f"import sys; sys.path.insert(0, {src!r}); "
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; ")


def measure(artifact: Path, profile: str, work: Path, python: str, env: dict, install: bool,
            src: str | None = None) -> dict:
    bundle = work / f"bundle-{artifact.name}"
    code = (_use_src(src) + "import genrecal; print(genrecal.__file__); "
            "from genrecal.benchmarks.bundle import make_bundle; "
            f"make_bundle({str(artifact)!r}, {profile!r}, {str(bundle)!r}, log=lambda *_: None)")
    used = subprocess.run([python, "-c", code], check=True, env=env, capture_output=True, text=True)
    record = {"genrecal_used": used.stdout.strip().splitlines()[0],"bundle_mb": du_mb(bundle), "genrecal_mb": du_mb(bundle / "genrecal"),
              "genrecal_files": len(list((bundle / "genrecal").rglob("*.py"))),
              "requirements": (bundle / "requirements.txt").read_text().split("\n")}
    if not install:
        return record
    subprocess.run([sys.executable, "-m", "venv", str(bundle / ".venv")], check=True)
    subprocess.run([sys.executable, "-m", "pip", "cache", "purge"], capture_output=True)
    t0 = time.perf_counter()
    done = subprocess.run(["sh", str(bundle / "run.sh"), "setup"], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    record["setup_s"] = round(time.perf_counter() - t0, 1)
    record["setup_rc"] = done.returncode
    if done.returncode:
        record["setup_error"] = (done.stderr or done.stdout)[-500:]
    venv_site = list((bundle / ".venv" / "lib").glob("python*/site-packages"))[0]
    record["venv_mb"] = du_mb(bundle / ".venv")
    record["torch_installed"] = (venv_site / "torch").is_dir()
    shutil.rmtree(bundle / ".venv")
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--install", default="onnxruntime",
                    help="comma list of runtimes whose `run.sh setup` is run and timed (llamacpp compiles "
                         "llama.cpp from source there: 4-12 min on 2 cores)")
    ap.add_argument("--genrecal-src", help="dir holding the genrecal package to bundle (default: the installed one)")
    args = ap.parse_args()
    env = dict(os.environ)
    results = {"genrecal_src": args.genrecal_src or "installed", "python": sys.version.split()[0], "bundles": {}}
    with tempfile.TemporaryDirectory(prefix="genrecal-footprint-") as tmp:
        work = Path(tmp)
        for runtime, artifact in make_artifacts(work, sys.executable, env).items():  # this genrecal's exporters
            profile = "host" if runtime == "onnxruntime" else "phone-class"
            results["bundles"][runtime] = measure(artifact, profile, work, sys.executable, env,
                                                  runtime in args.install.split(","), args.genrecal_src)
            print(runtime, {k: v for k, v in results["bundles"][runtime].items() if k != "requirements"})
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
