"""On-device bundles run from their own folder with their run script; results merge into a report.

The fresh-venv check (a new venv, `./run.sh setup` installing requirements.txt, then `./run.sh`)
is slow-marked: pip cannot reach an index here, so the venv sees this environment's packages
through a path file and pip must find every requirement already satisfied (--no-index).
"""
from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from genrecal.benchmarks.bundle import make_bundle, requirements
from genrecal.benchmarks.report import write_report
from genrecal.benchmarks.results import ResultsError, write_json
from genrecal.artifacts.manifest import load_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_sh(bundle: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNS": "1", "WARMUP": "0", "LIMIT": "2", "MAX_NEW_TOKENS": "3", "THREADS": "1", **(env or {})}
    env.pop("PYTHONPATH", None)
    return subprocess.run(["sh", str(bundle / "run.sh"), *args], cwd="/", env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def bundle(student, tmp_path_factory) -> Path:
    return make_bundle(student, "host", tmp_path_factory.mktemp("b") / "bundle-host", role="student",
                       log=lambda *_: None)


def test_bundle_is_self_contained(bundle):
    names = {p.name for p in bundle.iterdir()}
    assert {"artifact", "genrecal", "run.sh", "requirements.txt", "bundle.json"} <= names
    manifest = load_manifest(bundle / "artifact")  # written for the bare HF dir, and verified
    assert manifest.format == "hf" and manifest.family == "smolvlm"
    assert (bundle / "genrecal" / "runtimes" / "torch_runtime.py").is_file()  # an HF artifact runs on torch
    assert not (bundle / "genrecal" / "distill").exists() and not (bundle / "genrecal" / "export").exists()
    assert not list(bundle.rglob("__pycache__"))
    reqs = (bundle / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("transformers==") for r in reqs) and "psutil" in reqs
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["profile"] == "host" and meta["runtime"] == "torch" and meta["role"] == "student"
    assert os.access(bundle / "run.sh", os.X_OK)


def test_requirements_follow_the_runtime():
    assert "llama-cpp-python==0.3.36" in requirements("llamacpp")
    assert any(r.startswith("onnxruntime") for r in requirements("onnxruntime"))


def test_bundle_runs_from_its_own_folder_and_merges_into_a_report(bundle, results_dir, tmp_path):
    res = _run_sh(bundle, "latency", env={"PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr[-2000:]
    out = bundle / "results" / f"latency-{platform.node()}.json"
    result = json.loads(out.read_text())
    assert Path(result["genrecal"]["path"]) == bundle / "genrecal"  # ran the bundle's own copy
    assert result["artifact"]["path"] == str(bundle / "artifact")
    assert result["artifact"]["label"] == "student torch fp32"
    md = write_report([bundle / "results", results_dir], tmp_path / "report")
    text = md.read_text()
    assert "## Latency" in text and "## Accuracy" in text and "student torch fp32" in text
    for png in ("latency_phases.png", "accuracy_vs_decode.png"):
        assert (md.parent / png).read_bytes()[:8] == PNG_MAGIC and f"]({png})" in text


def test_report_compares_teacher_and_student(results, tmp_path):
    items = []
    for role, speed in (("teacher", 10.0), ("student", 40.0)):
        for kind in ("latency", "accuracy"):
            r = copy.deepcopy(results[kind])
            r["artifact"].update(role=role, label=f"{role} torch fp32")
            if kind == "latency":
                r["summary"]["decode_tok_s"]["median"] = speed
                r["peak_rss_mb"] = 4000.0 if role == "teacher" else 1000.0
            items.append(r)
    write_json(items, tmp_path / "merged.json")  # a list of results in one file also reads
    md = write_report([tmp_path / "merged.json"], tmp_path / "report")
    text = md.read_text()
    assert "## Teacher vs student" in text and "| 4.00x | 0.25x |" in text
    assert (md.parent / "teacher_vs_student.png").read_bytes()[:8] == PNG_MAGIC


def test_report_refuses_what_is_not_a_result(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"kind": "latency"}))
    with pytest.raises(ResultsError, match="not a genrecal-bench result"):
        write_report([tmp_path / "x.json"], tmp_path / "r")
    (tmp_path / "y.json").write_text("{oops")
    with pytest.raises(ResultsError, match="not readable as JSON"):
        write_report([tmp_path / "y.json"], tmp_path / "r")
    with pytest.raises(ResultsError, match="not found"):
        write_report([tmp_path / "nope"], tmp_path / "r")


def test_bundle_cli_errors(bench, student, tmp_path):
    code, _, err = bench("bundle", "--artifact", student, "--profile", "iphone", "--out", tmp_path / "b")
    assert code == 2 and "unknown profile 'iphone'" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = bench("bundle", "--artifact", student, "--profile", "host", "--out", tmp_path / "busy")
    assert code == 2 and "not a genrecal bundle; not replacing it" in err


@pytest.mark.slow
def test_bundle_runs_in_a_fresh_venv_with_only_its_run_script(bundle, tmp_path):
    venv = bundle / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # no package index here: expose this environment's site-packages (not genrecal: .pth files in
    # that dir are not processed, so the editable install stays invisible) and install --no-index
    site = subprocess.run([venv / "bin" / "python", "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dev-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # the venv's own old setuptools (from ensurepip) would shadow the one torch requires
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "setuptools"],
                   capture_output=True, timeout=120)
    res = _run_sh(bundle, "setup", env={"PIP_ARGS": "--no-index"}, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = _run_sh(bundle, env={"PYTHON": "/nonexistent"}, timeout=600)  # must use .venv, not $PYTHON
    assert res.returncode == 0, res.stderr[-2000:]
    for kind in ("latency", "accuracy"):
        result = json.loads((bundle / "results" / f"{kind}-{platform.node()}.json").read_text())
        assert result["genrecal"]["python"].startswith(str(venv))
        assert Path(result["genrecal"]["path"]) == bundle / "genrecal"


def test_phone_bundle_of_a_gguf_artifact_runs_with_llama_cpp(quantised, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny rows: the exporter warns that K-quants fell back
        artifact = quantised("gguf")
    bundle = make_bundle(artifact, "phone-class", tmp_path / "bundle-phone", log=lambda *_: None)
    assert "llama-cpp-python==0.3.36" in (bundle / "requirements.txt").read_text().splitlines()
    assert json.loads((bundle / "bundle.json").read_text())["runtime"] == "llamacpp"
    res = _run_sh(bundle, "latency", env={"PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((bundle / "results" / f"latency-{platform.node()}.json").read_text())
    assert result["artifact"]["runtime"] == "llamacpp" and result["profile"]["name"] == "phone-class"
    assert result["config"]["threads"] == 1  # THREADS from the environment overrides the profile's 4


_NO_TORCH = """import runpy, sys
for name in ("torch", "torchvision"):
    sys.modules[name] = None  # `import torch` fails, as on a device without it
assert sys.argv[1] == "-m"
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("fmt, profile", [("onnx", "host"), ("gguf", "phone-class")])
def test_device_bundle_carries_runtime_code_only_and_runs_without_torch(fmt, profile, quantised, tmp_path):
    """The bundle of an ONNX / GGUF artifact: only the modules its commands import, requirements without
    torch, and its run script works where `import torch` fails (the bundle's own genrecal package only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        artifact = quantised(fmt)
    bundle = make_bundle(artifact, profile, tmp_path / "bundle", log=lambda *_: None)
    shipped = {p.relative_to(bundle / "genrecal").parts[0] for p in (bundle / "genrecal").rglob("*.py")}
    assert shipped <= {"__init__.py", "artifacts", "benchmarks", "runtimes", "data", "errors.py", "fsutil.py",
                       "images.py", "config_cli.py", "user_text.py"}, shipped
    assert not (bundle / "genrecal" / "runtimes" / "torch_runtime.py").exists()
    reqs = (bundle / "requirements.txt").read_text().splitlines()
    assert not [r for r in reqs if r.startswith(("torch", "accelerate", "torchvision"))], reqs
    wrapper = tmp_path / "python-without-torch"
    (tmp_path / "no_torch.py").write_text(_NO_TORCH)
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'no_torch.py'} \"$@\"\n")
    wrapper.chmod(0o755)
    res = _run_sh(bundle, "latency", env={"PYTHON": str(wrapper)})
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-2000:]
    result = json.loads((bundle / "results" / f"latency-{platform.node()}.json").read_text())
    assert Path(result["genrecal"]["path"]) == bundle / "genrecal" and result["artifact"]["format"] == fmt
