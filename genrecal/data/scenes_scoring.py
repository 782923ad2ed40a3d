"""A phrasing-independent scorer for `genrecal.data.scenes` answers: parse the content, compare it.

    score_answer("the red circle is left of the blue square.", {"kind": "relation", "relation": "left", ...})

An answer is right when the content it states equals the truth, in whatever words around it:
- count: the numbers it names (words two..ten or digits) are exactly {truth};
- color / shape / size / relation: the colours / shapes / sizes / relation words (left, right, above,
  below) it names are exactly {truth} (naming two, e.g. by repeating the question's options, is wrong);
- describe: the (size, colour, shape) triples it names, as a multiset, equal the scene's objects, in
  any order; a number it names must be the object count.
"""
from __future__ import annotations

import re
from collections import Counter

from genrecal.data.shapes import COLORS, SHAPES

NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10}
SIZE_WORDS = ("small", "large")
RELATIONS = ("left", "right", "above", "below")


def words(text: str) -> list[str]:
    """Lower-case words and digits; plural shape words made singular ("circles" -> "circle")."""
    out = re.findall(r"[a-z]+|\d+", text.lower())
    return [w[:-1] if w.endswith("s") and w[:-1] in SHAPES else w for w in out]


def numbers(ws: list[str]) -> set[int]:
    return {NUMBER_WORDS[w] if w in NUMBER_WORDS else int(w) for w in ws if w in NUMBER_WORDS or w.isdigit()}


def objects(ws: list[str]) -> Counter:
    """Multiset of "size colour shape" triples named in order (each word adjacent)."""
    found = Counter()
    for a, b, c in zip(ws, ws[1:], ws[2:]):
        if a in SIZE_WORDS and b in COLORS and c in SHAPES:
            found[f"{a} {b} {c}"] += 1
    return found


def parse(text: str, kind: str) -> dict:
    """The content of an answer of `kind` (see the module doc): sets and multisets, for diagnostics."""
    ws = words(text)
    if kind == "count":
        return {"count": sorted(numbers(ws))}
    if kind == "describe":
        return {"objects": sorted(objects(ws).elements()), "count": sorted(numbers(ws))}
    vocab = {"color": tuple(COLORS), "shape": SHAPES, "size": SIZE_WORDS, "relation": RELATIONS}[kind]
    return {kind: sorted({w for w in ws if w in vocab})}


def score_answer(prediction: str, truth: dict) -> bool:
    """True when the prediction states exactly the truth's content (see the module doc).

    truth: a `genrecal.data.scenes.question` truth dict ({"kind", and the kind's fields}); an unknown
    kind raises ValueError."""
    kind = truth.get("kind")
    if kind not in ("count", "color", "shape", "size", "relation", "describe"):
        raise ValueError(f"unknown scene question kind {kind!r}")
    got = parse(prediction, kind)
    if kind == "count":
        return got["count"] == [truth["count"]]
    if kind == "describe":
        return got["objects"] == sorted(truth["objects"]) and got["count"] in ([], [truth["count"]])
    return got[kind] == [truth[kind]]
