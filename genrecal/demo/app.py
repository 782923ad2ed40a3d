"""The Gradio page: image + question in, teacher and student answers side by side, streamed.

    from genrecal.demo.app import build_app
    app = build_app(Models.open(teacher_dir, student_dir), max_new_tokens=32)
    app.launch(**launch_options("127.0.0.1", 7860))

API (for gradio_client): `/ask` takes (image, question, student artifact path, history) and
returns (teacher answer, teacher metrics, student answer, student metrics, agreement, message,
history table, history CSV, history); `/clear` empties the history.
"""
from __future__ import annotations

import base64
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from genrecal.demo import history as hist
from genrecal.demo.compare import Snapshot, agreement_line, ask_both, failure_message, metrics_line
from genrecal.demo.gallery import examples
from genrecal.demo.inputs import MAX_QUESTION_CHARS, MAX_UPLOAD_MB, InputError, check_question, load_image
from genrecal.demo.models import Models

TITLE = "GenRecal: teacher vs distilled student"


def _unopened_path(payload):
    """Image preprocessing that hands the handler the uploaded file unopened, so an unreadable or
    absurdly large upload is refused by `inputs.load_image` with a message instead of failing
    inside Gradio's own decoding."""
    if payload is None:
        return None
    if payload.path:
        return payload.path
    if payload.url and payload.url.startswith("data:"):
        return base64.b64decode(payload.url.split(",", 1)[-1])  # bytes: decoded by load_image
    return None


def image_input(**kwargs) -> gr.Image:
    """A gr.Image whose preprocessing is `_unopened_path`. Set on the instance: subclassing a Gradio
    component makes Gradio write a .pyi file next to the subclass's module at import time."""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = _unopened_path
    return image


@dataclass
class _UI:
    image: gr.Image
    question: gr.Textbox
    student: gr.Dropdown
    ask: gr.Button
    teacher_answer: gr.Textbox
    teacher_metrics: gr.Markdown
    student_answer: gr.Textbox
    student_metrics: gr.Markdown
    agreement: gr.Markdown
    message: gr.Markdown
    table: gr.Dataframe
    csv: gr.DownloadButton
    clear: gr.Button
    history: gr.State

    def outputs(self) -> list:
        return [self.teacher_answer, self.teacher_metrics, self.student_answer, self.student_metrics,
                self.agreement, self.message, self.table, self.csv, self.history]


def _answer_column(role: str, models: Models) -> tuple[gr.Dropdown | None, gr.Textbox, gr.Markdown]:
    gr.Markdown(f"### {role.capitalize()}")
    if role == "teacher":
        picker = None
        gr.Textbox(models.teacher.label, label="model", interactive=False, elem_id="teacher-model",
                   info="family · runtime · path")
    else:
        picker = gr.Dropdown(choices=models.student_choices(), value=models.default_student, label="artifact",
                             elem_id="student-artifact", info="the student as any of its exported artifacts")
    answer = gr.Textbox(label=f"{role} answer", lines=2, interactive=False, elem_id=f"{role}-answer")
    metrics = gr.Markdown("", label=f"{role} metrics", elem_id=f"{role}-metrics")
    return picker, answer, metrics


def _layout(models: Models) -> _UI:
    gr.Markdown(f"# {TITLE}\nAsk both models about an image. They answer one after the other on this "
                "machine's CPU, so each side's timings are its own.")
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            image = image_input(label="image", sources=["upload", "clipboard"], height=300, elem_id="image")
            question = gr.Textbox(label="question", placeholder="what shape is present?", lines=1,
                                  max_length=MAX_QUESTION_CHARS, elem_id="question")
            ask = gr.Button("Ask both", variant="primary", elem_id="ask")
            message = gr.Markdown("", label="message", elem_id="message")
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                with gr.Column():
                    _, teacher_answer, teacher_metrics = _answer_column("teacher", models)
                with gr.Column():
                    student, student_answer, student_metrics = _answer_column("student", models)
            agreement = gr.Markdown("", label="agreement", elem_id="agreement")
    gr.Examples([[str(e.path), e.question] for e in examples()], inputs=[image, question],
                label="Examples: easy-vqa test images and scikit-image photos (click one, then Ask both)",
                examples_per_page=8, elem_id="examples")
    with gr.Accordion("Session history", open=True):
        table = gr.Dataframe(headers=hist.TABLE_COLUMNS, value=[], label="history", interactive=False, wrap=True,
                             elem_id="history")
        with gr.Row():
            csv = gr.DownloadButton("Download CSV", value=None, size="sm", elem_id="csv")
            clear = gr.Button("Clear history", size="sm", elem_id="clear")
    return _UI(image, question, student, ask, teacher_answer, teacher_metrics, student_answer, student_metrics,
               agreement, message, table, csv, clear, gr.State([]))


def _csv_file(history: list[dict], folder: Path) -> str | None:
    """The history written as CSV for the download button (None while it is empty)."""
    if not history:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return str(hist.write_csv(history, folder / "genrecal-demo-history.csv"))


def build_app(models: Models, max_new_tokens: int = 32) -> gr.Blocks:
    """The page over already-loaded models; one question runs at a time (the runtimes are single-request)."""
    csv_root = Path(tempfile.mkdtemp(prefix="genrecal-demo-"))  # one CSV per browser session

    with gr.Blocks(title="genrecal demo", analytics_enabled=False) as app:
        weakref.finalize(app, shutil.rmtree, csv_root, ignore_errors=True)  # at exit at the latest
        ui = _layout(models)

        def view(snap: Snapshot, load_note: str, message: str, history: list[dict], csv) -> tuple:
            return (snap.teacher.text, metrics_line(snap.teacher, models.teacher.load_note),
                    snap.student.text, metrics_line(snap.student, load_note), agreement_line(snap), message,
                    hist.table(history), csv, history)

        def ask(image, question, student_path, history, request: gr.Request):
            history = history or []
            folder = csv_root / (getattr(request, "session_hash", None) or "anonymous")
            idle = Snapshot()
            try:
                question = check_question(question)
                checked = load_image(image)
                student = models.student(student_path)
            except InputError as exc:
                yield view(idle, "", f"**Error:** {exc}", history, _csv_file(history, folder))
                return
            except Exception as exc:  # the chosen student artifact failed to load (any backend's error)
                idle.student.error = failure_message("student", "loading", exc)
                yield view(idle, "", f"**Error:** {idle.student.error}", history, _csv_file(history, folder))
                return
            note = f"Note: the image was {checked.note}." if checked.note else ""
            snap = idle
            for snap in ask_both(models.teacher.runtime, student.runtime, checked.image, question, max_new_tokens):
                yield view(snap, student.load_note, note, history, gr.skip())
            history = hist.add_turn(history, question, snap, student.path)
            errors = "  \n".join(f"**Error:** {a.error}" for a in (snap.teacher, snap.student) if a.error)
            yield view(snap, student.load_note, "  \n".join(m for m in (note, errors) if m), history,
                       _csv_file(history, folder))

        def clear():
            return [], _csv_file([], csv_root), []

        ui.ask.click(ask, [ui.image, ui.question, ui.student, ui.history], ui.outputs(), api_name="ask",
                     concurrency_limit=1, concurrency_id="models")
        ui.question.submit(ask, [ui.image, ui.question, ui.student, ui.history], ui.outputs(),
                           api_visibility="private", concurrency_limit=1, concurrency_id="models")
        ui.clear.click(clear, None, [ui.table, ui.csv, ui.history], api_name="clear")
    return app


def launch_options(host: str, port: int, share: bool = False) -> dict:
    """Keyword arguments for `Blocks.launch`: loopback unless told otherwise, no SSR, upload cap."""
    return dict(server_name=host, server_port=port, share=share, max_file_size=f"{MAX_UPLOAD_MB}mb",
                ssr_mode=False, show_error=False, quiet=True,
                run_history=False, footer_links=["api"])  # the page keeps its own session history
