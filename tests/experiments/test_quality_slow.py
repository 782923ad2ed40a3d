"""`genrecal-bench quality --quick` end to end: teacher, pretrained student, sft/uld/genrecal, report.

    pytest -m slow tests/benchmarks/test_quality_slow.py      # ~5-10 min on 2 CPU cores
"""
from __future__ import annotations

import json
import time

import pytest


@pytest.mark.slow
def test_quality_quick_end_to_end(bench, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    t0 = time.perf_counter()
    code, stdout, _ = bench("quality", "--quick", "--out", out, "--cache", cache)
    wall = time.perf_counter() - t0
    assert code == 0
    assert wall < 600, f"--quick took {wall:.0f} s (the issue allows 10 min)"
    result = json.loads((out / "quality.json").read_text())
    assert (out / "quality.png").read_bytes()[:4] == b"\x89PNG"
    assert "| genrecal |" in (out / "quality.md").read_text() and "| genrecal |" in stdout
    runs = {r["name"]: r for r in result["runs"]}
    assert set(runs) == {"sft", "uld", "genrecal"} and result["seeds"] == [0]
    # the same budget for every method: steps and samples; GenRecal's stages sum to it
    assert len({(r["steps"], r["samples"]) for r in runs.values()}) == 1
    assert sum(runs["genrecal"]["stage_steps"].values()) == runs["sft"]["steps"]
    for r in runs.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["train_seconds"] > 0
    mass = runs["genrecal"]["attention_mass"]
    assert 0.0 < mass["align_mean"] <= 1.0 and 0.0 < mass["distill_mean"] <= 1.0
    assert 0.5 < result["attention_mass_uniform"] < 1.0
    assert set(result["summary"]) == {"sft", "uld", "genrecal"}
    assert result["summary"]["sft"]["gap_closed"] in (0.0, None)

    # a second invocation reuses the cached teacher and student and every finished run
    code, _, _ = bench("quality", "--quick", "--out", out, "--cache", cache)
    again = json.loads((out / "quality.json").read_text())
    assert code == 0 and all(r["reused"] for r in again["runs"]) and again["teacher"]["reused"]
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in result["runs"]]
    assert len(again["invocations"]) == 2
