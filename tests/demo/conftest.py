"""Demo fixtures: tiny teacher/student dirs laid out like the quickstart's, and a running demo.

The demo runs in this process on a free loopback port (Gradio serves from its own thread), so a
test can reach it with a browser or with gradio_client and still inspect the loaded models.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from demo_helpers import STUDENT_FAMILY, TEACHER_FAMILY, hf_artifact, paced, serve_demo


@pytest.fixture(scope="session")
def quickstart_out(zoo_dir, tmp_path_factory) -> Path:
    """OUT/teacher, OUT/student-genrecal and OUT/export/hf, like `genrecal quickstart` + export."""
    out = tmp_path_factory.mktemp("qs")
    shutil.copytree(zoo_dir(TEACHER_FAMILY), out / "teacher")
    shutil.copytree(zoo_dir(STUDENT_FAMILY), out / "student-genrecal")
    hf_artifact(out / "student-genrecal", out / "export" / "hf")
    return out


@pytest.fixture(scope="session")
def demo_models(quickstart_out):
    from genrecal.demo.models import Models

    return Models.open(quickstart_out / "teacher", quickstart_out / "student-genrecal")


@pytest.fixture(scope="session")
def demo_url(demo_models):
    with serve_demo(demo_models) as url:
        yield url


@pytest.fixture(scope="session")
def paced_demo_url(demo_models):
    """The same demo with answers streamed at 20 pieces/s, so a browser can see them grow."""
    with serve_demo(paced(demo_models)) as url:
        yield url
