"""Helpers for the data tests: tiny PNGs and LLaVA files written into tmp_path."""

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image


def png_bytes(size: int = 32, color: str = "red") -> bytes:
    # Noise makes the PNG long enough that cutting it in half really truncates pixel data.
    image = Image.effect_noise((size, size), 64).convert("RGB")
    image.paste(Image.new("RGB", (size // 2, size // 2), color))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def write_png(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(**kwargs))
    return path


def record(image="images/a.png", question="<image>\nWhat color?", answer="red", **extra):
    rec = {
        "conversations": [
            {"from": "human", "value": question},
            {"from": "gpt", "value": answer},
        ],
        **extra,
    }
    if image is not None:
        rec["image"] = image
    return rec


def write_json(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers above, as a fixture (test modules cannot import conftest reliably)."""
    return SimpleNamespace(
        png_bytes=png_bytes, write_png=write_png, record=record,
        write_json=write_json, write_jsonl=write_jsonl,
    )


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    """A directory with images/a.png and images/b.png and no data file yet."""
    root = tmp_path / "ds"
    write_png(root / "images" / "a.png", color="red")
    write_png(root / "images" / "b.png", color="blue")
    return root
