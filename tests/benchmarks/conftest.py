"""Benchmark test helpers: a tiny student, and latency/accuracy results made once per session
(`bench`, genrecal-bench in this process, is in tests/conftest.py: the experiments' tests use it too)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def student(zoo_dir) -> str:
    return zoo_dir("smolvlm", "tiny")


@pytest.fixture(scope="session")
def results_dir(student, tmp_path_factory) -> Path:
    """latency.json (with a bandwidth measurement) and accuracy.json of the tiny student."""
    from genrecal.benchmarks.accuracy import AccuracyConfig, run_accuracy
    from genrecal.benchmarks.latency import LatencyConfig, run_latency
    from genrecal.benchmarks.results import write_json

    out = tmp_path_factory.mktemp("results")
    before = torch.get_num_threads()
    try:
        lat = run_latency(LatencyConfig(student, threads=1, warmup=1, runs=3, max_new_tokens=6, role="student"),
                          log=lambda *_: None)
        acc = run_accuracy(AccuracyConfig(student, limit=4, threads=1, role="student"), log=lambda *_: None)
    finally:
        torch.set_num_threads(before)
    write_json(lat, out / "latency.json")
    write_json(acc, out / "accuracy.json")
    return out


@pytest.fixture(scope="session")
def results(results_dir) -> dict:
    return {k: json.loads((results_dir / f"{k}.json").read_text()) for k in ("latency", "accuracy")}


@pytest.fixture(scope="session")
def quantised(student, tmp_path_factory):
    """quantised(fmt) -> the tiny student exported as ONNX int8 or GGUF Q4_K_M (no parity check), or skip
    while that exporter is not importable."""
    import importlib

    root = tmp_path_factory.mktemp("quantised")
    made: dict[str, Path] = {}

    def get(fmt: str) -> Path:
        if fmt not in made:
            out = root / {"onnx": "onnx-int8", "gguf": "gguf-q4_k_m"}[fmt]
            try:
                mod = importlib.import_module(f"genrecal.export.{fmt}")
                if fmt == "onnx":
                    mod.OnnxBuild(Path(student), root / ".work", check=False).build(out, "int8", "cpu")
                else:
                    mod.export_gguf(Path(student), out, "q4_k_m", check=False)
            except (ImportError, AttributeError) as exc:
                pytest.skip(f"the {fmt} exporter is not available yet ({exc})")
            made[fmt] = out
        return made[fmt]

    return get
