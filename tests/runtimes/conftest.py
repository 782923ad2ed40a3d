"""Runtime test helpers: a tiny SmolVLM saved as an HF dir and as genrecal export artifacts."""
from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FAMILY = "smolvlm"  # the family every backend (torch, ONNX, GGUF) supports


@pytest.fixture(scope="session")
def image() -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def student(zoo_dir) -> str:
    return zoo_dir(FAMILY, "tiny")


@pytest.fixture(scope="session")
def hf_artifact(student, tmp_path_factory) -> Path:
    """The student copied into an `hf` export dir with its manifest (what genrecal-export writes as OUT/hf)."""
    from genrecal.artifacts.manifest import Manifest, dir_sha256, write_manifest

    out = tmp_path_factory.mktemp("artifacts") / "hf"
    shutil.copytree(student, out)
    write_manifest(out, Manifest(format="hf", target="hf", family=FAMILY, precision="fp32",
                                 source_sha256=dir_sha256(Path(student))))
    return out


def _export_onnx(student: Path, out: Path, precision: str) -> None:
    from genrecal.export.onnx import OnnxBuild

    OnnxBuild(student, out.parent / f".work-{out.name}", check=False).build(out, precision, "cpu")


def _export_gguf(student: Path, out: Path, precision: str) -> None:
    from genrecal.export.gguf import export_gguf

    export_gguf(student, out, precision, check=False)


def _exporter(fmt: str):
    """The exporter for a format, or skip (the exporters are written alongside the runtimes)."""
    module = {"onnx": "genrecal.export.onnx", "gguf": "genrecal.export.gguf"}[fmt]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not importable yet ({exc}); this test runs once the exporter lands")
    return {"onnx": _export_onnx, "gguf": _export_gguf}[fmt]


@pytest.fixture(scope="session")
def exported(student, tmp_path_factory):
    """exported(fmt, precision) -> an export dir of the tiny student, made once per session (no parity
    check: the point here is to compare the runtimes, which the tests do themselves)."""
    root = tmp_path_factory.mktemp("exports")
    made: dict[tuple[str, str], Path] = {}

    def get(fmt: str, precision: str) -> Path:
        key = (fmt, precision)
        if key not in made:
            export = _exporter(fmt)
            out = root / f"{fmt}-{precision}"
            try:
                export(Path(student), out, precision)
            except (ImportError, AttributeError) as exc:  # an exporter mid-way: entry point not there yet
                pytest.skip(f"the {fmt} exporter's entry point is not available yet ({exc})")
            made[key] = out
        return made[key]

    return get
