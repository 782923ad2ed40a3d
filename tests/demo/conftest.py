"""Demo fixtures: tiny teacher/student dirs laid out like the quickstart's, and a running demo.

The demo runs in this process on a free loopback port (Gradio serves from its own thread), so a
test can reach it with a browser or with gradio_client and still inspect the loaded models.
"""
from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager
from pathlib import Path

import pytest

from genrecal.manifest import Manifest, dir_sha256, write_manifest

TEACHER_FAMILY, STUDENT_FAMILY = "llava", "qwen2_vl"  # the quickstart's pair: different tokenizers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hf_artifact(student: Path, out: Path) -> Path:
    """The student copied into an `hf` export dir with its manifest (as genrecal-export writes OUT/export/hf)."""
    shutil.copytree(student, out)
    write_manifest(out, Manifest(format="hf", target="hf", family=STUDENT_FAMILY, precision="fp32",
                                 source_sha256=dir_sha256(student)))
    return out


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


@contextmanager
def serve_demo(models, max_new_tokens: int = 12):
    """Serve the demo over `models` on a free 127.0.0.1 port; yields its URL."""
    from genrecal.demo.app import build_app, launch_options

    app = build_app(models, max_new_tokens=max_new_tokens)
    port = free_port()
    app.launch(**launch_options("127.0.0.1", port), prevent_thread_lock=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="session")
def demo_url(demo_models):
    with serve_demo(demo_models) as url:
        yield url
