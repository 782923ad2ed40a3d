"""The family registry, walked: every registered family builds its tiny zoo model, and goes through every
export format its record declares, checked against PyTorch (docs/architecture.md, "Adding a family").

    python -m pytest tests/families/test_registry_walk.py -q

A new family module is picked up here without editing this file.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from genrecal import families
from genrecal.families import get_family, names, with_format

CASES = [(name, fmt) for name in names() for fmt in get_family(name, role="teacher").formats]


def test_every_module_registers_the_family_it_is_named_for():
    for name in names():
        family = get_family(name, role="teacher")
        assert family.name == name and family.tokenizer.vocab_size > 0 and family.sizes[0] == "tiny"
        assert family.student == bool(family.formats)  # a student is exported; a teacher-only family is not


def test_formats_are_what_the_export_targets_offer():
    from genrecal.export.gguf.layout import supported_families

    assert supported_families() == with_format("gguf")
    assert set(with_format("onnx")) >= set(with_format("gguf"))
    assert set(families.student_names()) == set(with_format("onnx"))


def test_an_unregistered_module_is_refused_in_one_line(tmp_path, monkeypatch):
    from genrecal.families import UnsupportedFamilyError, _load

    with pytest.raises(UnsupportedFamilyError, match="unsupported student family 'no_such_vlm'"):
        get_family("no_such_vlm")
    with pytest.raises(ModuleNotFoundError):
        _load("no_such_vlm")


def _student(name: str, fmt: str, zoo_dir) -> Path:
    family = get_family(name)
    if fmt != "gguf" or family.gguf.zoo_vocab is None:
        return Path(zoo_dir(name, family.gguf.zoo_size if fmt == "gguf" else "tiny"))
    from genrecal.export.gguf.converter import llama_cpp_source
    from genrecal.export.gguf.layout import GgufExportError

    try:
        vocab = llama_cpp_source() / "models" / family.gguf.zoo_vocab
    except GgufExportError as exc:
        pytest.skip(f"llama.cpp's converter is not available: {exc}")
    return Path(zoo_dir(name, family.gguf.zoo_size, vocab))


@pytest.mark.parametrize("name, fmt", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_family_exports_every_format_it_declares(name, fmt, zoo_dir, tmp_path):
    student = _student(name, fmt, zoo_dir)
    if fmt == "onnx":
        from genrecal.export.onnx import OnnxBuild

        manifest = OnnxBuild(student, tmp_path / "work", threads=1).build(tmp_path / "onnx-fp32", "fp32", "cpu")
        assert manifest.parity["max_abs_diff"] <= 1e-3 and manifest.parity["greedy_identical"] == 1.0
    else:
        from genrecal.export.gguf import export_gguf

        manifest = export_gguf(student, tmp_path / "gguf-f16", "f16", threads=1, samples=1, steps=4,
                               accuracy_limit=2)
        assert manifest.parity["checked"] and manifest.parity["reference"]["greedy_identical"] == manifest.parity["samples"]
    assert manifest.family == name
