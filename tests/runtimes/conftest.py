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
    from genrecal.manifest import Manifest, dir_sha256, write_manifest

    out = tmp_path_factory.mktemp("artifacts") / "hf"
    shutil.copytree(student, out)
    write_manifest(out, Manifest(format="hf", target="hf", family=FAMILY, precision="fp32",
                                 source_sha256=dir_sha256(Path(student))))
    return out


def _exporter(fmt: str):
    """The exporter's entry point for a format, or skip (the exporter is written alongside)."""
    candidates = {"onnx": ("genrecal.export.onnx", "export_onnx"), "gguf": ("genrecal.export.gguf", "export_gguf")}
    module, func = candidates[fmt]
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"{module}.{func} is not importable yet ({exc}); this test runs once the exporter lands")


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
            export(Path(student), out, precision, check=False)
            made[key] = out
        return made[key]

    return get
