"""The example images shipped in `genrecal/demo/examples/` (sources and licences in LICENSES.md)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXAMPLES_DIR = Path(__file__).with_name("examples")


@dataclass(frozen=True)
class Example:
    path: Path
    question: str
    answer: str | None  # the easy-vqa reference answer; None for the photos


def examples() -> list[Example]:
    """Every shipped example, easy-vqa first, in the order of examples.json."""
    entries = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    return [Example(EXAMPLES_DIR / e["file"], e["question"], e.get("answer")) for e in entries]
