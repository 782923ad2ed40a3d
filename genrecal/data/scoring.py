"""Answer scoring shared by the quickstart, the quality benchmark and `genrecal-bench accuracy`."""
from __future__ import annotations

import re

_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation and articles, keep the first line (VQA-style normalisation)."""
    text = text.strip().splitlines()[0] if text.strip() else ""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def vqa_soft_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy min(#humans that gave the answer / 3, 1); with one reference it equals exact match."""
    hits = sum(exact_match(prediction, a) for a in answers)
    return min(hits / 3.0, 1.0) if len(answers) > 1 else float(hits)
