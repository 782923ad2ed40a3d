"""Demo parts without a server: image and question checks, streaming/agreement, history CSV, CLI errors."""
from __future__ import annotations

import csv
import io

import pytest
from PIL import Image

from genrecal.demo import compare, history, inputs
from genrecal.demo.cli import DemoError, resolve_paths
from genrecal.demo.gallery import examples
from genrecal.demo.models import student_artifacts
from genrecal.errors import GenrecalError
from genrecal.runtimes.base import Generation, RuntimeError_, Stream, Timing


# ---- images ----
def test_shipped_examples_are_readable_and_licensed():
    items = examples()
    assert len(items) >= 6 and any(e.answer for e in items) and any(e.answer is None for e in items)
    for e in items:
        assert inputs.load_image(e.path).image.mode == "RGB" and e.question.strip()
        assert e.path.name in (e.path.parent / "LICENSES.md").read_text()


@pytest.mark.parametrize("source", ["path", "bytes", "pil"])
def test_load_image_accepts_paths_bytes_and_pil(tmp_path, source):
    im = Image.new("RGBA", (64, 48), (255, 0, 0, 128))
    path = tmp_path / "a.png"
    im.save(path)
    value = {"path": path, "bytes": path.read_bytes(), "pil": im}[source]
    checked = inputs.load_image(value)
    assert checked.image.mode == "RGB" and checked.image.size == (64, 48) and checked.note == ""


def test_large_image_is_downscaled_keeping_its_aspect_ratio():
    checked = inputs.load_image(Image.new("RGB", (4000, 1000), "blue"))
    w, h = checked.image.size
    assert w * h <= inputs.FIT_PIXELS and abs(w / h - 4.0) < 0.01
    assert checked.note == f"downscaled from 4000x1000 to {w}x{h} pixels"


@pytest.mark.parametrize("value, expected", [
    (None, "no image"),
    ("", "no image"),
    (b"not an image at all", "not an image this demo can read"),
    ("/nonexistent/x.png", "was not found"),
])
def test_unusable_images_are_refused_with_a_reason(value, expected):
    with pytest.raises(inputs.InputError, match=expected):
        inputs.load_image(value)


def test_truncated_and_tiny_images_are_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), "red").save(buf, format="JPEG")
    with pytest.raises(inputs.InputError, match="could not be decoded|not an image"):
        inputs.load_image(buf.getvalue()[:300])
    with pytest.raises(inputs.InputError, match="too small"):
        inputs.load_image(Image.new("RGB", (3, 100)))


def test_input_errors_are_user_errors():
    from genrecal.errors import user_errors

    assert issubclass(inputs.InputError, GenrecalError) and issubclass(DemoError, user_errors())


# ---- questions ----
def test_question_is_stripped_and_capped():
    assert inputs.check_question("  what shape?\n") == "what shape?"
    assert inputs.check_question("x" * inputs.MAX_QUESTION_CHARS) == "x" * inputs.MAX_QUESTION_CHARS
    for bad, expected in (("", "empty"), (" \n\t", "empty"), (None, "empty"),
                          ("y" * (inputs.MAX_QUESTION_CHARS + 1), "limit is 500"), ("a\x00b", "control")):
        with pytest.raises(inputs.InputError, match=expected):
            inputs.check_question(bad)


# ---- streaming both sides ----
class FakeRuntime:
    """A runtime that streams `pieces`, or raises `fail` after the first piece."""

    def __init__(self, name: str, pieces: list[str], fail: BaseException | None = None):
        self.name, self.family, self.path = name, "fake", "/fake"
        self.pieces, self.fail = pieces, fail

    def generate(self, images, prompt, max_new_tokens=32, stream=False):
        def run():
            for i, piece in enumerate(self.pieces):
                if self.fail is not None and i == 1:
                    raise self.fail
                yield piece
            text = "".join(self.pieces).strip()
            return Generation(text, list(range(len(self.pieces))),
                              Timing(ttft_ms=12.0, decode_tok_s=50.0, e2e_ms=80.0, peak_rss_mb=300.0,
                                     tokens_out=len(self.pieces)))
        return Stream(run())


def _run(teacher, student) -> list[tuple[str, str]]:
    image = Image.new("RGB", (32, 32))
    seen = [(s.teacher.text, s.student.text) for s in compare.ask_both(teacher, student, image, "q?")]
    return seen


def test_both_sides_stream_teacher_first_and_agreement_is_normalised():
    teacher, student = FakeRuntime("torch", ["The", " red", "."]), FakeRuntime("onnxruntime", ["red"])
    seen = _run(teacher, student)
    assert ("The", "") in seen and ("The red", "") in seen  # teacher streamed before the student started
    assert seen[-1] == ("The red.", "red")
    snap = list(compare.ask_both(teacher, student, Image.new("RGB", (32, 32)), "q?"))[-1]
    assert snap.done and compare.agreement(snap) is True
    assert compare.agreement_line(snap).startswith("**Agreement: yes**")
    line = compare.metrics_line(snap.student, "loaded in 0.1 s")
    for part in ("12 ms", "50.0 tok/s", "0.08 s", "300 MiB", "1 tokens", "loaded in 0.1 s"):
        assert part in line


@pytest.mark.parametrize("fail, expected", [
    (RuntimeError_("the decoder graph is missing"), "student (onnxruntime) failed: the decoder graph is missing"),
    (ValueError("shape mismatch " + "x" * 400), "student (onnxruntime) failed: ValueError: shape mismatch"),
])
def test_a_failing_side_becomes_a_one_line_message(fail, expected):
    teacher, student = FakeRuntime("torch", ["yes"]), FakeRuntime("onnxruntime", ["a", "b"], fail=fail)
    snap = list(compare.ask_both(teacher, student, Image.new("RGB", (32, 32)), "q?"))[-1]
    assert snap.teacher.generation.text == "yes" and snap.student.generation is None
    assert snap.student.error.startswith(expected) and len(snap.student.error) < 400
    assert "\n" not in snap.student.error and "Traceback" not in snap.student.error
    assert compare.agreement(snap) is None and "not available" in compare.agreement_line(snap)
    assert compare.metrics_line(snap.student).startswith("**Error:**")


# ---- history ----
def _snapshot(teacher_text: str, student_text: str | None) -> compare.Snapshot:
    snap = compare.Snapshot()
    timing = Timing(ttft_ms=10.04, decode_tok_s=99.96, e2e_ms=123.45, peak_rss_mb=512.0)
    snap.teacher.generation = Generation(teacher_text, [1], timing)
    if student_text is None:
        snap.student.error = "student (llamacpp) failed: boom"
    else:
        snap.student.generation = Generation(student_text, [1], timing)
    return snap


def test_history_rows_and_csv(tmp_path):
    rows = history.add_turn([], "what color?", _snapshot("Red.", "red"), "out/export/onnx-int8", when=0)
    rows = history.add_turn(rows, "=HYPERLINK(\"x\")", _snapshot("-1", None))
    assert [r["#"] for r in rows] == [1, 2] and rows[0]["agree"] == "yes" and rows[1]["agree"] == ""
    assert rows[0]["teacher TTFT ms"] == 10.0 and rows[0]["student tok/s"] == 100.0
    assert rows[1]["student answer"] == "[error] student (llamacpp) failed: boom"
    assert history.table(rows)[0][:5] == [1, "what color?", "Red.", "red", "yes"]
    with open(history.write_csv(rows, tmp_path / "h.csv"), newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == history.COLUMNS
    assert got[0]["student artifact"] == "out/export/onnx-int8" and got[0]["teacher total ms"] == "123.5"
    assert got[1]["question"] == "'=HYPERLINK(\"x\")" and got[1]["teacher answer"] == "'-1"  # not formulas


def test_history_csv_of_an_empty_session_has_only_the_header(tmp_path):
    text = history.write_csv([], tmp_path / "h.csv").read_text(encoding="utf-8")
    assert text.strip() == ",".join(history.COLUMNS)


# ---- model paths ----
def test_student_artifacts_are_found_beside_the_student(quickstart_out):
    student, exported = quickstart_out / "student-genrecal", quickstart_out / "export" / "hf"
    assert student_artifacts(student) == [student, exported]
    assert student_artifacts(quickstart_out / "export") == [exported]  # an export root lists its artifacts


def test_missing_quickstart_outputs_say_how_to_create_them(tmp_path, monkeypatch, capsys):
    from genrecal.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DemoError, match=r"genrecal quickstart --out genrecal-out"):
        resolve_paths(None, None)
    with pytest.raises(DemoError, match=r"--teacher nowhere: not found"):
        resolve_paths("nowhere", None)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "genrecal quickstart" in err and "Traceback" not in err
    assert main(["demo", "--port", "0", "--teacher", ".", "--student", "."]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err


def test_busy_port_is_a_one_line_error(quickstart_out, capsys):
    import socket

    from genrecal.demo.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        from genrecal.cli import _run

        code = _run(lambda argv: main(argv), ["--teacher", str(quickstart_out / "teacher"),
                                              "--student", str(quickstart_out / "student-genrecal"),
                                              "--port", str(port)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "--port" in err and "Traceback" not in err


def test_runtime_that_cannot_run_the_student_is_a_one_line_error(quickstart_out, capsys):
    from genrecal.cli import main

    code = main(["demo", "--teacher", str(quickstart_out / "teacher"),
                 "--student", str(quickstart_out / "student-genrecal"), "--runtime", "onnxruntime"])
    err = capsys.readouterr().err
    assert code == 2 and "runs with torch, not onnxruntime" in err and "Traceback" not in err


def test_building_the_page_writes_nothing_into_the_package(demo_models):
    from pathlib import Path

    from genrecal.demo import app

    app.build_app(demo_models)
    package = Path(app.__file__).parent
    assert not list(package.glob("*.pyi")), "a Gradio component subclass made Gradio write a .pyi stub"


# ---- --device / --dtype (torch-run models) ----
def test_dtype_reaches_every_torch_run_model(quickstart_out):
    import torch

    from genrecal.demo.models import Models

    models = Models.open(quickstart_out / "teacher", quickstart_out / "student-genrecal", threads=1, device="cpu",
                         dtype="bf16")
    assert models.teacher.runtime.model.dtype == torch.bfloat16
    assert models.student(None).runtime.model.dtype == torch.bfloat16
    assert models.student(str(quickstart_out / "export" / "hf")).runtime.model.dtype == torch.bfloat16


def test_cuda_without_a_gpu_is_a_one_line_error(quickstart_out, capsys):
    import torch

    from genrecal.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["demo", "--teacher", str(quickstart_out / "teacher"),
                 "--student", str(quickstart_out / "student-genrecal"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--device cuda: torch" in err and "Traceback" not in err
