"""The session's questions with both answers and timings: table rows for the page, and a CSV file.

    rows = add_turn([], question, snap, student_path="genrecal-out/export/onnx-int8w")
    write_csv(rows, "history.csv")

A history is a plain list of dicts keyed by COLUMNS, kept per browser session by the page (Gradio
state), so two visitors never see each other's questions.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from genrecal.demo.compare import Answer, Snapshot, agreement

COLUMNS = [
    "#", "time", "question",
    "teacher answer", "student answer", "agree",
    "teacher TTFT ms", "teacher tok/s", "teacher total ms", "teacher peak RSS MiB",
    "student TTFT ms", "student tok/s", "student total ms", "student peak RSS MiB",
    "student artifact",
]
TABLE_COLUMNS = [  # what the page shows; the CSV has every column
    "#", "question", "teacher answer", "student answer", "agree",
    "teacher TTFT ms", "teacher tok/s", "student TTFT ms", "student tok/s", "student artifact",
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run such a cell as a formula


def _side(role: str, answer: Answer) -> dict:
    gen = answer.generation
    if gen is None:
        return {f"{role} answer": f"[error] {answer.error}" if answer.error else "",
                f"{role} TTFT ms": "", f"{role} tok/s": "", f"{role} total ms": "", f"{role} peak RSS MiB": ""}
    t = gen.timing
    return {f"{role} answer": gen.text, f"{role} TTFT ms": round(t.ttft_ms, 1),
            f"{role} tok/s": round(t.decode_tok_s, 1), f"{role} total ms": round(t.e2e_ms, 1),
            f"{role} peak RSS MiB": round(t.peak_rss_mb, 1)}


def add_turn(history: list[dict], question: str, snap: Snapshot, student_path: str = "",
             when: float | None = None) -> list[dict]:
    """A new list: `history` plus one row for a finished question."""
    agree = agreement(snap)
    row = {"#": len(history) + 1, "time": time.strftime("%H:%M:%S", time.localtime(when)), "question": question,
           **_side("teacher", snap.teacher), **_side("student", snap.student),
           "agree": "" if agree is None else ("yes" if agree else "no"), "student artifact": student_path}
    return [*history, {c: row[c] for c in COLUMNS}]


def table(history: list[dict]) -> list[list]:
    """Rows for the page's Dataframe, with TABLE_COLUMNS as headers."""
    return [[row[c] for c in TABLE_COLUMNS] for row in history]


def _cell(value) -> str | int | float:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # shown as text by spreadsheets, not evaluated
    return value


def write_csv(history: list[dict], path: str | Path) -> Path:
    """Write the history as CSV (header row first, UTF-8); text that looks like a formula is quoted."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in history:
            writer.writerow([_cell(row[c]) for c in COLUMNS])
    return path
