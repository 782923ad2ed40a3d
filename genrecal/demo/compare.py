"""One question to both models, streamed: teacher first, then student, as a series of snapshots.

    for snap in ask_both(teacher_rt, student_rt, image, "what shape is present?", max_new_tokens=16):
        print(snap.teacher.text, "|", snap.student.text)

The two models run one after the other, not at once: on a small CPU two concurrent generations
would share the cores and each side's TTFT and tok/s would measure the other's load. A failure on
one side (any exception from its runtime) becomes that side's `error` line and the other side
still runs; the page never sees a traceback (it is logged on the server instead).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

from PIL import Image

from genrecal.data.scoring import exact_match
from genrecal.errors import GenrecalError
from genrecal.runtimes.base import Generation, Runtime

log = logging.getLogger("genrecal.demo")
MAX_ERROR_CHARS = 300  # one readable line in the page; the full exception goes to the server log


@dataclass
class Answer:
    """One side's answer as it streams in."""

    text: str = ""
    generation: Generation | None = None  # set once the stream is exhausted
    error: str | None = None
    running: bool = False

    @property
    def done(self) -> bool:
        return self.generation is not None or self.error is not None


@dataclass
class Snapshot:
    teacher: Answer = field(default_factory=Answer)
    student: Answer = field(default_factory=Answer)

    @property
    def done(self) -> bool:
        return self.teacher.done and self.student.done

    @property
    def started(self) -> bool:
        return any(a.running or a.done for a in (self.teacher, self.student))


def ask_both(teacher: Runtime, student: Runtime, image: Image.Image, question: str,
             max_new_tokens: int = 32) -> Iterator[Snapshot]:
    """Yields the same Snapshot object after every streamed piece of either side; the last has `done`."""
    snap = Snapshot()
    for role, runtime in (("teacher", teacher), ("student", student)):
        answer: Answer = getattr(snap, role)
        answer.running = True
        yield snap
        try:
            stream = runtime.generate([image], question, max_new_tokens=max_new_tokens, stream=True)
            for piece in stream:
                answer.text += piece
                yield snap
            answer.generation = stream.result
            answer.text = stream.result.text if stream.result is not None else answer.text.strip()
        except Exception as exc:  # any backend failure is shown as a message, never as a traceback
            answer.error = failure_message(role, getattr(runtime, "name", "runtime"), exc)
        finally:
            answer.running = False
        yield snap


def failure_message(role: str, name: str, exc: BaseException) -> str:
    """'student (onnxruntime) failed: <reason>' — one line; unexpected errors are logged in full."""
    if isinstance(exc, GenrecalError):
        reason = str(exc)
    else:
        log.exception("%s runtime %s raised", role, name)
        reason = f"{type(exc).__name__}: {exc}"
    reason = " ".join(reason.split())
    if len(reason) > MAX_ERROR_CHARS:
        reason = reason[:MAX_ERROR_CHARS - 1] + "…"
    return f"{role} ({name}) failed: {reason}"


def agreement(snap: Snapshot) -> bool | None:
    """Whether both answers match after VQA normalisation; None until both sides have an answer."""
    t, s = snap.teacher.generation, snap.student.generation
    if t is None or s is None:
        return None
    return exact_match(t.text, s.text)


def agreement_line(snap: Snapshot) -> str:
    agree = agreement(snap)
    if not snap.started:
        return ""
    if agree is None:
        if snap.teacher.error or snap.student.error:
            return "**Agreement:** not available (one side failed)"
        return "**Agreement:** waiting for both answers…"
    if agree:
        return "**Agreement: yes**, the answers are the same after normalisation (exact match)"
    return "**Agreement: no**, the answers differ after normalisation (exact match)"


def metrics_line(answer: Answer, load_note: str = "") -> str:
    """TTFT, decode speed, total time and memory of a finished answer, as a small markdown table."""
    if answer.error:
        return f"**Error:** {answer.error}"
    if answer.generation is None:
        return "generating…" if answer.running else ""
    t = answer.generation.timing
    notes = [f"{t.tokens_out} tokens", load_note, "peak RSS is the whole process's high-water mark"]
    return ("| TTFT | decode | total | peak RSS |\n|---|---|---|---|\n"
            f"| {t.ttft_ms:,.0f} ms | {t.decode_tok_s:,.1f} tok/s | {t.e2e_ms / 1000:,.2f} s | {t.peak_rss_mb:,.0f} MiB |"
            "\n\n" + " · ".join(n for n in notes if n))
