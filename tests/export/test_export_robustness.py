"""`genrecal-export` on inputs that lie or disks that fill: one `error:` line, nothing partial left.

    python -m pytest tests/export/test_export_robustness.py -q

Cases of issue 25 section 3 (docs/robustness.md): a truncated or garbage student safetensors, a
student dir without its processor files, and a full disk (ENOSPC simulated in the writes).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from genrecal.cli import export_main

FAST = ["--target", "cpu", "--formats", "onnx", "--precision", "fp32", "--no-check", "--threads", "1"]


def _export(student, out, *args) -> int:
    return export_main(["--student", str(student), "--out", str(out), *(args or FAST)])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]  # (a zoo build's progress bar aside)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _leftovers(out: Path) -> list[str]:
    """What an export left in OUT (hidden temp dirs included)."""
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_student_weights_are_one_line(zoo_dir, tmp_path, capsys, how):
    student = tmp_path / "student"
    shutil.copytree(zoo_dir("smolvlm"), student)
    weights = student / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if how == "truncated" else os.urandom(4096))
    out = tmp_path / "out"
    assert _export(student, out) == 2
    line = _one_error_line(capsys)
    assert str(weights) in line and "not a valid safetensors file" in line, line
    assert _leftovers(out) == []


@pytest.mark.parametrize("missing", ["processor", "tokenizer", "chat_template"])
def test_student_without_processor_files(zoo_dir, tmp_path, capsys, missing):
    student = tmp_path / "student"
    shutil.copytree(zoo_dir("smolvlm"), student)
    names = {"processor": ("processor_config.json", "preprocessor_config.json"),
             "tokenizer": ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                           "special_tokens_map.json"),
             "chat_template": ("chat_template.jinja", "chat_template.json")}[missing]
    for name in names:
        (student / name).unlink(missing_ok=True)
    out = tmp_path / "out"
    assert _export(student, out) == 2
    line = _one_error_line(capsys)
    assert str(student) in line and "processor" in line, line
    assert _leftovers(out) == []  # not even an empty OUT or a partial hf/


def _no_space(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_disk_full_writing_hf(zoo_dir, tmp_path, capsys, monkeypatch):
    import transformers.modeling_utils as mu

    def full(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"\0" * 1000)
        raise _no_space(filename)

    monkeypatch.setattr(mu, "safe_save_file", full)
    out = tmp_path / "out"
    assert _export(zoo_dir("smolvlm"), out) == 2
    line = _one_error_line(capsys)
    assert "disk full" in line and str(out) in line and "hf" in line, line
    assert _leftovers(out) == []


def test_disk_full_in_an_artifact_stops_the_export(zoo_dir, tmp_path, capsys, monkeypatch):
    """A full disk while writing an artifact: one line; the temp dirs and the work dir are gone, no
    export_summary.json claims a finished export, the earlier run's artifacts are intact."""
    from genrecal.artifacts.manifest import load_manifest
    from genrecal.export import run

    out = tmp_path / "out"
    assert _export(zoo_dir("smolvlm"), out) == 0
    before = load_manifest(out / "onnx-fp32")
    capsys.readouterr()

    def full(artifact, out_, onnx, opts):
        from genrecal.fsutil import atomic_dir

        with atomic_dir(out_ / artifact.dirname) as tmp:
            (tmp / "model.onnx").write_bytes(b"\0" * 100)
            raise _no_space(tmp / "model.onnx")

    monkeypatch.setattr(run, "_build", full)
    assert _export(zoo_dir("smolvlm"), out) == 2
    line = _one_error_line(capsys)
    assert "disk full" in line and "onnx-fp32" in line, line
    assert _leftovers(out) == ["hf", "onnx-fp32"]  # no summary, no .tmp dirs, no .genrecal-work dir
    assert load_manifest(out / "onnx-fp32").files == before.files
    assert json.loads((out / "hf" / "genrecal_manifest.json").read_text())["format"] == "hf"
