"""Headless Debian Chromium driven by Playwright, for the demo's browser test and docs/demo.png.

    python tests/demo/chromium_driver.py URL OUT.png ["example question" ...] [--artifact "onnx int8"]

Playwright's own browser download cannot run here, so it drives /usr/bin/chromium (installed by
scripts/install_browser.sh) with the flags a closed network needs: no background networking,
component updates, sync or QUIC, and a fresh profile per launch.
"""
from __future__ import annotations

import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
METRICS_DONE = "tok/s"  # appears in a side's metrics line once its answer is complete
# records every distinct value each answer box shows, every 10 ms: proof that answers stream in
WATCH_ANSWERS = """() => { window.__seen = {teacher: [], student: []};
  setInterval(() => { for (const role of ['teacher', 'student']) {
    const value = document.querySelector('#' + role + '-answer textarea').value;
    const seen = window.__seen[role];
    if (value && seen[seen.length - 1] !== value) seen.push(value); } }, 10); }"""


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    """A Playwright page in a fresh headless Chromium profile; closed on exit."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="genrecal-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": width, "height": height})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def choose_student(page, text: str, timeout_ms: int = 30_000) -> None:
    """Pick the student artifact whose dropdown label contains `text` (e.g. "onnx int8")."""
    page.click("#student-artifact input")
    page.get_by_role("option").filter(has_text=text).first.click(timeout=timeout_ms)
    page.wait_for_function("t => document.querySelector('#student-artifact input').value.includes(t)", arg=text,
                           timeout=timeout_ms)


def ask_example(page, url: str | None, question: str, timeout_ms: int = 90_000) -> dict:
    """Open the demo (unless url is None: stay on the page), click the example row with `question`,
    press Ask, and wait for both metrics and the history row.

    Returns what the page shows: both answers and metrics, the agreement line, the history text,
    and `seen`: every distinct text each answer box showed while streaming.
    """
    if url is not None:
        page.goto(url)
    page.wait_for_selector("#ask", timeout=timeout_ms)
    rows = "() => [...document.querySelectorAll('#history [role=row]')].filter(r => r.innerText.trim()).length"
    rows_before = page.evaluate(rows)
    page.locator("#examples").get_by_role("gridcell", name=question).first.click()  # fills image + question
    page.wait_for_function("q => document.querySelector('#question textarea').value === q", arg=question,
                           timeout=timeout_ms)
    page.wait_for_selector("#image img", timeout=timeout_ms)
    page.evaluate(WATCH_ANSWERS)
    page.click("#ask")
    page.wait_for_function(f"n => ({rows})() > n", arg=rows_before, timeout=timeout_ms)
    for role in ("teacher", "student"):
        page.wait_for_function(
            "([id, s]) => (document.querySelector(id)?.innerText || '').includes(s)",
            arg=[f"#{role}-metrics", METRICS_DONE], timeout=timeout_ms)
    return {
        "teacher_answer": page.input_value("#teacher-answer textarea"),
        "student_answer": page.input_value("#student-answer textarea"),
        "teacher_metrics": page.inner_text("#teacher-metrics"),
        "student_metrics": page.inner_text("#student-metrics"),
        "agreement": page.inner_text("#agreement"),
        "history": page.inner_text("#history"),
        "seen": page.evaluate("() => window.__seen"),
    }


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description="ask the demo example questions in Chromium and take a screenshot")
    p.add_argument("url")
    p.add_argument("out", help="screenshot PNG")
    p.add_argument("questions", nargs="*", default=["what shape is present?"], help="example questions, in order")
    p.add_argument("--artifact", help="student artifact (label text) for every question after the first")
    args = p.parse_args(argv)
    with chromium_page() as page:
        page.goto(args.url)
        for i, question in enumerate(args.questions):
            if i == 1 and args.artifact:
                choose_student(page, args.artifact)
            print(ask_example(page, None, question))
        page.screenshot(path=str(args.out), full_page=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
