"""`genrecal-bench quality-v4 --quick` end to end: vision tower, teacher, start, prior, gate, both budgets, every
method, reports.

    pytest -m slow tests/experiments/test_quality_v4_slow.py      # the issue allows 10 min on 2 cores
"""
from __future__ import annotations

import json
import time

import pytest


@pytest.mark.slow
def test_quality_v4_quick_end_to_end(tmp_path):
    from genrecal.experiments import quality_v4

    out, cache = tmp_path / "out", tmp_path / "cache"
    t0 = time.perf_counter()
    assert quality_v4.main(["--quick", "--out", str(out), "--cache", str(cache)]) == 0
    wall = time.perf_counter() - t0
    gate = json.loads((out / "quality_v4_gate.json").read_text())["attempts"][-1]
    assert 0.0 < gate["prior"]["accuracy"] < 1.0 and "question-only prior" in (out / "quality_v4_gate.md").read_text()
    assert {r["name"] for r in gate["runs"]} == {"sft", "kd"} and gate["pilot"]["margin"] == \
        gate["pilot"]["kd"] - gate["pilot"]["sft"]
    assert [c["id"] for c in gate["criteria"]] == [1, 2, 3, 4, 5, 6, 7]
    result = json.loads((out / "quality_v4.json").read_text())
    ran = {(r["regime"], r["name"]) for r in result["runs"]}
    assert ran == {(b, m) for b in quality_v4.BUDGETS for m in quality_v4.METHODS}
    for r in result["runs"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["in_kind"] <= 1.0
        assert r["seconds_per_step"] > 0 and r["peak_rss_mb"] > 100
    md = (out / "quality_v4.md").read_text()
    assert "## Budget B1" in md and "## Budget B2" in md and (out / "quality_v4.png").read_bytes()[:4] == b"\x89PNG"
    again = time.perf_counter()  # resumable: a second invocation reuses every finished run
    assert quality_v4.main(["--quick", "--out", str(out), "--cache", str(cache)]) == 0
    assert time.perf_counter() - again < wall / 2
    assert wall < 600, f"--quick took {wall:.0f} s (the issue allows 10 min)"
