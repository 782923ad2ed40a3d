"""Export test fixtures: ONNX artifacts of the tiny zoo models, built once per session.

    python -m pytest tests/export -q

Every artifact is built the way genrecal-export builds it (OnnxBuild: fp32 graphs once, then each
precision, parity-checked against PyTorch eager) into tmp dirs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and on a shared 2-core machine two OpenMP threads
    per process spin against other jobs (a 20x slowdown was measured); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def onnx_artifact(zoo_dir, tmp_path_factory):
    """onnx_artifact(family, precision, decoder="auto") -> (artifact dir, manifest), parity-checked;
    decoder: --onnx-decoder (auto | builder | torchscript)."""
    from genrecal.export.onnx import OnnxBuild

    root = tmp_path_factory.mktemp("onnx")
    builds: dict[tuple[str, str], OnnxBuild] = {}
    made: dict[tuple[str, str, str], tuple] = {}

    def get(family: str, precision: str, decoder: str = "auto"):
        if (family, precision, decoder) not in made:
            if (family, decoder) not in builds:
                builds[family, decoder] = OnnxBuild(Path(zoo_dir(family)), root / f".work-{family}-{decoder}",
                                                    check=True, threads=1, decoder=decoder)
            out = root / family / f"onnx-{precision}-{decoder}"
            made[family, precision, decoder] = (out, builds[family, decoder].build(out, precision, "cpu"))
        return made[family, precision, decoder]

    return get


@pytest.fixture(scope="session")
def easy_vqa_sample():
    from genrecal.data import load_easy_vqa_questions

    question, answer, image = load_easy_vqa_questions("test", limit=1)[0]
    return question, answer, image
