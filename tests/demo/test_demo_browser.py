"""The demo in a real headless Chromium: pick an example, ask, see both answers and their metrics.

CI installs Chromium with `bash scripts/install_browser.sh`; without /usr/bin/chromium this skips.
The screenshot lands in test-artifacts/demo-browser.png (gitignored).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from chromium_driver import CHROMIUM, ask_example, chromium_page
from demo_helpers import GRADIO_PANDAS_NOISE

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason=f"{CHROMIUM} not installed (run: bash scripts/install_browser.sh)"),
              *GRADIO_PANDAS_NOISE]


def test_example_answered_side_by_side_in_chromium(paced_demo_url):
    pytest.importorskip("playwright", reason="playwright not installed (pip install -e '.[demo]')")
    from genrecal.demo.gallery import examples

    example = examples()[0]
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        shown = ask_example(page, paced_demo_url, example.question)
        page.screenshot(path=str(ARTIFACTS / "demo-browser.png"), full_page=True)

        for role in ("teacher", "student"):
            metrics, seen = shown[f"{role}_metrics"], shown["seen"][role]
            assert shown[f"{role}_answer"].strip(), f"no {role} answer in the page"
            assert len(seen) >= 2, f"the {role} answer did not stream (the page only ever showed {seen})"
            for label in ("TTFT", "ms", "tok/s", "total", "peak RSS", "MiB"):
                assert label in metrics, f"{label!r} missing from the {role} metrics: {metrics!r}"
        assert "Agreement:" in shown["agreement"] and "waiting" not in shown["agreement"]
        assert example.question in shown["history"]
        assert shown["teacher_answer"] in shown["history"]
        assert "Traceback" not in page.content()
        assert not errors, f"JavaScript errors in the page: {errors}"
    assert (ARTIFACTS / "demo-browser.png").stat().st_size > 10_000


def test_empty_question_is_a_message_in_the_page(demo_url):
    pytest.importorskip("playwright", reason="playwright not installed (pip install -e '.[demo]')")
    with chromium_page() as page:
        page.goto(demo_url)
        page.wait_for_selector("#ask")
        page.locator("#examples").get_by_role("gridcell", name="what color is the shape?").first.click()
        page.wait_for_selector("#image img")
        page.fill("#question textarea", "   ")
        page.click("#ask")
        page.wait_for_function("() => document.querySelector('#message').innerText.includes('question is empty')",
                               timeout=60_000)
        assert "Traceback" not in page.content()
        assert page.input_value("#teacher-answer textarea") == ""
