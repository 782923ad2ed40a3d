"""Helpers the demo tests import by name (conftest.py is not importable reliably: every test folder
has one, and the last one imported wins the module name `conftest`)."""
from __future__ import annotations

import dataclasses
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from genrecal.artifacts.manifest import Manifest, dir_sha256, write_manifest
from genrecal.runtimes.base import Stream

TEACHER_FAMILY, STUDENT_FAMILY = "llava", "qwen2_vl"  # the quickstart's pair: different tokenizers
# gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix
GRADIO_PANDAS_NOISE = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
                       pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]


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


class Paced:
    """A runtime whose stream hands each piece on `delay_s` late. Tiny models answer in ~0.1 s, too
    fast for a page to repaint between pieces; paced, a browser can watch an answer grow."""

    def __init__(self, runtime, delay_s: float = 0.05):
        self._runtime, self.delay_s = runtime, delay_s

    def __getattr__(self, name):
        return getattr(self._runtime, name)

    def generate(self, images, prompt, max_new_tokens=32, stream=False):
        out = self._runtime.generate(images, prompt, max_new_tokens=max_new_tokens, stream=stream)
        if not stream:
            return out

        def pieces():
            for piece in out:
                time.sleep(self.delay_s)
                yield piece
            return out.result

        return Stream(pieces())


def paced(models, delay_s: float = 0.05):
    """A copy of a demo `Models` whose teacher and loaded students stream at a watchable pace."""
    def slow(loaded):
        return dataclasses.replace(loaded, runtime=Paced(loaded.runtime, delay_s))

    return dataclasses.replace(models, teacher=slow(models.teacher),
                               _students={k: slow(v) for k, v in models._students.items()})
