"""The easy-vqa toy dataset (shapes and colours, 13 answers) as LLaVA JSON, offline.

    python -c "from genrecal.data import write_easy_vqa; write_easy_vqa('out/evqa', limit=200)"
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Literal

import easy_vqa

from genrecal.fsutil import atomic_dir

Split = Literal["train", "test"]


def easy_vqa_answers() -> list[str]:
    """The 13 possible answers (shapes, colours, yes/no)."""
    return list(easy_vqa.get_answers())


def load_easy_vqa_questions(
    split: Split = "test", limit: int | None = None, seed: int = 0
) -> list[tuple[str, str, Path]]:
    """(question, answer, image_path) triples in a seeded shuffled order, the first `limit`.

    The same (split, limit, seed) picks the same questions as `write_easy_vqa`.
    """
    return [(q, a, path) for _, q, a, _, path in _selected(split, limit, seed)]


def write_easy_vqa(
    out_dir: str | Path, split: Split = "train", limit: int | None = None, seed: int = 0
) -> Path:
    """Write `out_dir/data.json` (LLaVA format, one record per question) and `out_dir/images/`.

    limit: keep the first N questions after a shuffle seeded by `seed` (all when None).
    The directory is built next to `out_dir` and renamed into place, so readers never see a
    half-written dataset. An existing `out_dir` is replaced only if it is empty or holds a
    `data.json` (a previous output), never an unrelated directory. Returns `out_dir`.
    """
    out_dir = Path(out_dir).resolve()
    check_replaceable(out_dir)
    with atomic_dir(out_dir) as tmp:
        _write_into(tmp, split, limit, seed)
    return out_dir


def _selected(split: Split, limit: int | None, seed: int) -> list[tuple[int, str, str, int, Path]]:
    """(question index, question, answer, image id, image path) for the chosen questions."""
    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        image_paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        questions, answers, image_ids = easy_vqa.get_test_questions()
        image_paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    if limit is not None:
        order = order[:limit]
    return [
        (i, questions[i], answers[i], image_ids[i], Path(image_paths[image_ids[i]]))
        for i in order
    ]


def _write_into(tmp: Path, split: Split, limit: int | None, seed: int) -> None:
    images = tmp / "images"
    images.mkdir()
    records = []
    for i, question, answer, image_id, src in _selected(split, limit, seed):
        name = f"images/{image_id}.png"
        if not (tmp / name).exists():
            shutil.copyfile(src, tmp / name)
        records.append({
            "id": f"easy_vqa-{split}-{i}",
            "image": name,
            "conversations": [
                {"from": "human", "value": f"<image>\n{question}"},
                {"from": "gpt", "value": answer},
            ],
        })
    (tmp / "data.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")


def check_replaceable(out_dir: Path) -> None:
    """Refuse to replace anything but a previous dataset output (a dir holding data.json) or an empty dir."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / "data.json").is_file():
        raise FileExistsError(f"{out_dir} is not empty and holds no data.json; not replacing it")
