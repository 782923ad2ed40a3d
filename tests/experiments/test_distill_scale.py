"""`genrecal-bench distill-scale` on tiny zoo models (the 2B-shaped run is the benchmark itself):
every row is measured by a real `genrecal-distill` child, the summary states each goal, and a second
invocation reads the finished rows back instead of re-measuring them.

    .venv/bin/python -m pytest tests/benchmarks/test_distill_scale.py -q      (-m slow: the end-to-end run)
"""
from __future__ import annotations

import json

import pytest
from PIL import Image

from genrecal.experiments import distill_scale


def test_photos_are_448_to_1024_px_with_llava_records(tmp_path):
    data = distill_scale.photos(tmp_path, 12)
    records = json.loads(data.read_text())
    assert len(records) == 12
    sizes = [Image.open(tmp_path / r["image"]).size for r in records]
    assert all(448 <= side <= 1024 for size in sizes for side in size)
    assert len(set(sizes)) > 6  # sizes vary, as a real photo set's do
    assert records[0]["conversations"][0]["value"].startswith("<image>\n")


@pytest.mark.slow  # ~8 child processes of genrecal-distill: ~2 min here
def test_every_row_is_measured_once_and_summarised(zoo_dir, tmp_path):
    teacher, student = zoo_dir("qwen2_vl"), zoo_dir("smolvlm")
    lines = []
    record = distill_scale.measure(tmp_path, (1,), 2, 4, 8, teacher, student, say=lines.append)
    names = [r["name"] for r in record["rows"]]
    assert names == ["teacher forward", *(name for name, _ in distill_scale.RUNS), distill_scale.RUNS[3][0]]
    assert [r["samples"] for r in record["rows"]] == [4] * 6 + [8]
    assert all(r["step_s"] > 0 and r["peak_rss_mb"] > 100 for r in record["rows"])
    runs = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    assert len(runs) == 6 and all((d / "train_log.jsonl").is_file() and not (d / "student").exists() for d in runs)
    summary = "\n".join(distill_scale.summarise(record))
    assert "stage-2 step / (teacher forward + SFT step)" in summary and "doctor estimate" in summary
    assert "4 samples" in summary and "8 samples" in summary
    rows_file = (tmp_path / "rows.jsonl").read_text()
    again = distill_scale.measure(tmp_path, (1,), 2, 4, 8, teacher, student, say=lambda _: None)
    assert (tmp_path / "rows.jsonl").read_text() == rows_file  # nothing re-measured
    assert again["rows"] == record["rows"]
    assert "| 1 | 8 | genrecal distill (stage 2) |" in distill_scale.format_markdown(again)
