"""Multi-object scenes (genrecal.data.scenes) and their phrasing-independent scorer."""
from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from genrecal.data import scenes
from genrecal.data.scenes_scoring import parse, score_answer
from genrecal.data.shapes import COLORS


def _questions(n_scenes=300, seed=0):
    rng = random.Random(seed)
    for _ in range(n_scenes):
        objs = scenes.sample_scene(rng)
        for kind in scenes.KINDS:
            q, truth = scenes.question(objs, rng, kind)
            yield objs, q, truth


def test_every_phrasing_of_every_answer_scores_right():
    kinds = set()
    for objs, _, truth in _questions():
        kinds.add(truth["kind"])
        for k in range(len(scenes.PHRASINGS[truth["kind"]])):
            text = scenes.answer(objs, truth, k)
            assert score_answer(text, truth), (text, truth)
            assert score_answer(text.upper().replace(".", " !"), truth)  # case and punctuation do not matter
    assert kinds == set(scenes.KINDS)


def test_wrong_content_scores_wrong_whatever_the_phrasing():
    swap = {"color": ("color", lambda t: next(c for c in COLORS if c != t["color"])),
            "shape": ("shape", lambda t: next(s for s in ("circle", "triangle") if s != t["shape"])),
            "size": ("size", lambda t: "large" if t["size"] == "small" else "small"),
            "relation": ("relation", lambda t: {"left": "right", "right": "left", "above": "below",
                                                "below": "above"}[t["relation"]]),
            "count": ("count", lambda t: 2 if t["count"] != 2 else 3)}
    for objs, _, truth in _questions(120, seed=1):
        kind = truth["kind"]
        if kind == "describe":
            continue
        field, other = swap[kind]
        wrong = {**truth, field: other(truth)}
        for k in range(3):
            assert not score_answer(scenes.answer(objs, wrong, k), truth)
    relation = {"kind": "relation", "relation": "left", "subject": "red circle", "reference": "blue circle"}
    assert not score_answer("left or right", relation)  # both options named
    assert not score_answer("", relation) and not score_answer("it is", {"kind": "count", "count": 2})
    assert score_answer("It is to the LEFT.", relation)


def test_description_is_a_multiset_in_any_order():
    objs = [scenes.Obj("circle", "red", "small", 10, 10, 10), scenes.Obj("triangle", "blue", "large", 40, 30, 20),
            scenes.Obj("rectangle", "green", "small", 30, 50, 10)]
    truth = {"kind": "describe", "objects": sorted(o.phrase() for o in objs), "count": 3}
    right = scenes.describe(objs)
    assert right == "a small red circle, a small green rectangle and a large blue triangle"
    assert score_answer("three: a large blue triangle; a small green rectangle, and a small red circle", truth)
    assert not score_answer("four shapes: " + right, truth)  # a stated count must be the right one
    assert not score_answer("a small red circle and a large blue triangle", truth)  # one missing
    assert not score_answer(right + " and a small red circle", truth)  # one too many
    assert not score_answer(right.replace("large blue", "small blue"), truth)  # one attribute wrong
    assert parse(right, "describe")["objects"] == truth["objects"]
    with pytest.raises(ValueError):
        score_answer("x", {"kind": "weather"})


def _mask(im: np.ndarray, color: str) -> np.ndarray:
    return (np.abs(im.astype(int) - np.array(COLORS[color])).sum(-1) == 0)


def test_rendered_scenes_match_their_objects_and_relations():
    rng = random.Random(5)
    for _ in range(60):
        objs = scenes.sample_scene(rng)
        assert 2 <= len(objs) <= 5 and len({o.color for o in objs}) == len(objs)
        im = np.asarray(scenes.draw_scene(objs, rng))
        centres = {}
        for o in objs:
            ys, xs = np.nonzero(_mask(im, o.color))
            assert len(xs) >= 20, o  # the object is there, in its exact colour
            centres[o.color] = (xs.mean(), ys.mean())
            assert abs(xs.mean() + 0.5 - o.x) < 3  # where the scene says (pixel centres are +0.5)
            extent = xs.max() - xs.min() + 1
            assert scenes.SIZES[o.size][0] - 2 <= extent <= scenes.SIZES[o.size][1] + 1
        for q, truth in (scenes.question(objs, rng, "relation") for _ in range(5)):
            if truth["kind"] != "relation":  # no pair far enough apart: a count question instead
                assert not any(abs(p.x - o.x) >= scenes.MIN_GAP or abs(p.y - o.y) >= scenes.MIN_GAP
                               for p in objs for o in objs)
                continue
            a, b = (centres[truth[k].split()[0]] for k in ("subject", "reference"))
            rel = truth["relation"]
            assert {"left": a[0] < b[0], "right": a[0] > b[0], "above": a[1] < b[1], "below": a[1] > b[1]}[rel], q


def test_questions_name_one_object_each():
    for objs, q, truth in _questions(200, seed=2):
        if truth["kind"] == "color":  # named by size + shape: exactly one object has them
            assert sum(f"{o.size} {o.shape}" in q for o in objs) == 1
        if truth["kind"] in ("shape", "size"):
            assert sum(o.color in q for o in objs) == 1


def test_write_scenes_is_deterministic_llava_json_with_truths(tmp_path):
    from genrecal.data import load_samples

    a = scenes.write_scenes(tmp_path / "a", images=6, questions_per_image=3, seed=4)
    b = scenes.write_scenes(tmp_path / "b", images=6, questions_per_image=3, seed=4)
    held_out = scenes.write_scenes(tmp_path / "c", images=6, questions_per_image=3, seed=5)
    assert (a / "data.json").read_text() == (b / "data.json").read_text()
    assert (a / "images" / "0.png").read_bytes() != (held_out / "images" / "0.png").read_bytes()
    records = json.loads((a / "data.json").read_text())
    for r in records:
        assert score_answer(r["conversations"][1]["value"], r["truth"])
    samples = load_samples(a)
    assert len(samples) == len(records) and all(s.answer for s in samples)
    only_short = json.loads(scenes.write_scenes(tmp_path / "d", 6, 3, seed=4, phrasings=(0,)).joinpath(
        "data.json").read_text())
    assert [r["conversations"][1]["value"] for r in only_short if r["truth"]["kind"] == "color"] == \
        [r["truth"]["color"] for r in only_short if r["truth"]["kind"] == "color"]


def test_zoo_tokenizers_trained_with_the_scene_text_know_every_scene_word():
    from genrecal import zoo
    from genrecal.families import get_family

    extra = scenes.vocabulary_text(scenes=20)
    text = " ".join(sorted({w for line in extra for w in re.findall(r"[a-z0-9]+", line)}))
    for family in ("llava", "qwen2_vl"):
        spec = get_family(family, role="zoo").tokenizer
        tok = zoo.train_tokenizer(spec, extra_text=extra)
        pieces = tok.tokenize(text)
        # a word per token, none unknown (byte BPE splits off the space of a line's first word: 3 such words)
        assert tok.unk_token not in pieces and len(pieces) <= len(text.split()) + 3, (family, pieces)
        plain = zoo.train_tokenizer(spec)
        assert plain.get_vocab() == zoo.train_tokenizer(spec, extra_text=()).get_vocab() != tok.get_vocab()
