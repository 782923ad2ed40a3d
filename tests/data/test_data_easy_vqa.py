"""The easy-vqa writer: LLaVA JSON + copied PNGs, deterministic, atomic replacement."""

import json

import pytest
from PIL import Image

from genrecal.data import easy_vqa_answers, load_easy_vqa_questions, load_samples, write_easy_vqa


def test_answers_are_the_13():
    answers = easy_vqa_answers()
    assert len(answers) == 13 == len(set(answers))
    assert {"yes", "no", "circle", "red"} <= set(answers)


def test_write_easy_vqa_limit_20(tmp_path):
    out = write_easy_vqa(tmp_path / "evqa", split="train", limit=20, seed=0)
    assert out == (tmp_path / "evqa").resolve()
    records = json.loads((out / "data.json").read_text())
    assert len(records) == 20
    answers = set(easy_vqa_answers())
    for rec in records:
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and gpt["value"] in answers
        assert rec["image"].startswith("images/") and rec["image"].endswith(".png")
        with Image.open(out / rec["image"]) as im:
            im.load()
    used = {rec["image"].removeprefix("images/") for rec in records}
    assert {p.name for p in (out / "images").iterdir()} == used
    assert [p.name for p in tmp_path.iterdir()] == ["evqa"]  # no temp dirs left behind

    samples = load_samples(out)
    assert len(samples) == 20 and all(s.answer in answers for s in samples)

    again = write_easy_vqa(tmp_path / "evqa2", split="train", limit=20, seed=0)
    assert (again / "data.json").read_text() == (out / "data.json").read_text()
    other = write_easy_vqa(tmp_path / "evqa3", split="train", limit=20, seed=1)
    assert (other / "data.json").read_text() != (out / "data.json").read_text()


def test_write_replaces_previous_output_but_not_unrelated_dirs(tmp_path):
    out = write_easy_vqa(tmp_path / "evqa", split="test", limit=3)
    (out / "stale.txt").write_text("old")
    write_easy_vqa(out, split="test", limit=5)
    assert len(json.loads((out / "data.json").read_text())) == 5
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evqa"]

    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        write_easy_vqa(precious, limit=2)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_load_questions_matches_writer(tmp_path):
    triples = load_easy_vqa_questions("test", limit=10, seed=3)
    assert len(triples) == 10
    assert all(p.is_file() and a in easy_vqa_answers() for _, a, p in triples)
    out = write_easy_vqa(tmp_path / "evqa", split="test", limit=10, seed=3)
    samples = load_samples(out)
    assert [(s.messages[0]["content"], s.answer) for s in samples] == [
        (f"<image>\n{q}", a) for q, a, _ in triples
    ]
    assert [s.images[0].name for s in samples] == [p.name for _, _, p in triples]


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_easy_vqa_questions("val")
