"""The question-only prior: what a model scores that never looks at the image.

    prior = question_only_prior(train_pairs, test_pairs, key=scene_key, answer=scene_answer,
                                correct=score_answer, kind=lambda q, t: t["kind"])

Each test question is answered with the most frequent training answer of its group (`key`): per question kind
for the scenes (relation questions per axis asked: "left or right of" / "above or below"), per question text
for easy-vqa. Only accuracy above this figure comes from the image.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Callable, Iterable


def most_frequent(pairs: Iterable[tuple[object, str]]) -> dict[object, str]:
    """{group: its most frequent answer} over (group, answer) pairs; ties go to the answer seen first."""
    counts: dict[object, Counter] = defaultdict(Counter)
    for group, ans in pairs:
        counts[group][ans] += 1
    return {group: c.most_common(1)[0][0] for group, c in counts.items()}


def question_only_prior(train: list[tuple[str, object]], test: list[tuple[str, object]], key: Callable,
                        answer: Callable, correct: Callable, kind: Callable | None = None) -> dict:
    """Accuracy of the image-blind answer on `test`.

    train / test: (question, truth) pairs; key(question, truth) -> its group; answer(truth) -> the answer text a
    truth stands for; correct(prediction, truth) -> bool; kind(question, truth) -> the kind reported per kind
    (None: no per-kind figures). A test group never seen in training counts as wrong.
    Returns {"accuracy", "n", "by_kind", "answers": {group as text: answer}}."""
    best = most_frequent((key(q, t), answer(t)) for q, t in train)
    hits: dict[str, list[bool]] = defaultdict(list)
    for q, t in test:
        group = key(q, t)
        hits[kind(q, t) if kind else "all"].append(group in best and bool(correct(best[group], t)))
    n = sum(len(v) for v in hits.values())
    return {"accuracy": sum(sum(v) for v in hits.values()) / max(1, n), "n": n,
            "by_kind": {k: round(sum(v) / len(v), 4) for k, v in sorted(hits.items())} if kind else {},
            "answers": {str(g): a for g, a in sorted(best.items(), key=lambda kv: str(kv[0]))}}


def scene_key(question: str, truth: dict) -> str:
    """A scenes question's prior group: its kind, and for a relation question the axis it asks about."""
    if truth["kind"] == "relation":
        return "relation " + ("left-right" if "left or right" in question else "above-below")
    return truth["kind"]


def scene_answer(truth: dict) -> str:
    """The shortest answer text a scenes truth stands for ("3", "red", "left", ...)."""
    kind = truth["kind"]
    if kind == "count":
        return str(truth["count"])
    if kind == "describe":
        return " and ".join(f"a {o}" for o in truth["objects"])
    return truth[kind]


def scene_prior(train: list[tuple[str, dict]], test: list[tuple[str, dict]]) -> dict:
    """The scenes benchmarks' prior: per kind (relation per axis) the most frequent train answer, scored by
    genrecal.data.scenes_scoring."""
    from genrecal.data.scenes_scoring import score_answer

    return question_only_prior(train, test, scene_key, scene_answer, score_answer, kind=lambda q, t: t["kind"])


def text_prior(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> dict:
    """Exact-match data (easy-vqa): per question text the most frequent train answer, scored by exact match."""
    from genrecal.data.scoring import exact_match, normalize_answer

    return question_only_prior(train, test, key=lambda q, a: q.strip().lower(), answer=normalize_answer,
                               correct=exact_match)
