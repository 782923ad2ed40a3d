"""Dataset layouts people use (LLaVA, HF chat, TRL prompt-completion, SmolVLM texts), as JSON/JSONL
fixtures and as saved HF datasets; images bound to the turn whose text holds their placeholder."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genrecal.data import DataError, SkipReport, load_samples

FIXTURES = Path(__file__).parent / "fixtures" / "layouts"
LAYOUT_FILES = ["llava.json", "messages.jsonl", "trl.jsonl", "smolvlm_texts.jsonl"]
SYSTEM = {"role": "system", "content": "Answer in one word."}
RED, BLUE = "red_circle.png", "blue_square.png"


def summary(samples):
    """(record, turn, image file names, answer) per sample."""
    return [(s.index, s.turn, [p.name for p in s.images], s.answer) for s in samples]


EXPECTED = {
    "llava.json": [(0, 0, [RED], "red"), (0, 1, [RED], "circle"), (1, 0, [], "yes"), (2, 0, [], "hi"),
                   (2, 1, [BLUE], "rectangle")],
    "trl.jsonl": [(0, 0, [RED], "red"), (1, 0, [], "yes"), (2, 0, [], "hi"), (2, 1, [BLUE], "rectangle")],
    "smolvlm_texts.jsonl": [(0, 0, [RED], "red"), (0, 1, [RED], "circle"), (1, 0, [], "yes"),
                            (2, 0, [BLUE, RED], "two")],
}
EXPECTED["messages.jsonl"] = EXPECTED["llava.json"]


@pytest.mark.parametrize("name", LAYOUT_FILES)
def test_each_layout_loads_with_images_bound_to_their_turn(name):
    samples = load_samples(FIXTURES / name)
    assert summary(samples) == EXPECTED[name]
    first = samples[0].messages
    if name != "smolvlm_texts.jsonl":  # the_cauldron has no system turns
        assert first[0] == SYSTEM
    assert first[-2] == {"role": "user", "content": "<image>\nWhat color is the shape?"}
    if name == "smolvlm_texts.jsonl":
        return  # images belong to the first user turn there (next test)
    late = next(s for s in samples if s.answer == "rectangle")
    assert [m["content"] for m in late.messages if m["role"] == "user"] == ["Hello.", "<image>\nWhat shape is this?"]


def test_cauldron_images_are_prepended_to_the_first_user_turn():
    sample = load_samples(FIXTURES / "smolvlm_texts.jsonl")[-1]
    assert sample.messages[0]["content"] == "<image>\n<image>\nHow many shapes are there in the two pictures?"


def test_require_image_refuses_text_only_samples_per_turn():
    report = SkipReport()
    samples = load_samples(FIXTURES / "llava.json", on_bad="skip", report=report, require_image=True)
    assert summary(samples) == [(0, 0, [RED], "red"), (0, 1, [RED], "circle"), (2, 1, [BLUE], "rectangle")]
    assert report.counts == {"no_image": 2}
    assert sorted(report.examples["no_image"]) == [
        f"{FIXTURES / 'llava.json'} record 1: record has no image (no_image)",
        f"{FIXTURES / 'llava.json'} record 2 turn 0: no image up to this turn (its image comes in a later turn) "
        "(no_image)"]


def _save_hf(records: list[dict], out: Path, image_field: str = "images") -> Path:
    """The JSONL records as a saved HF dataset with the images embedded (datasets.Image)."""
    datasets = pytest.importorskip("datasets")
    rows = [dict(r, **{image_field: [str(FIXTURES / p) for p in r.get(image_field, [])]}) for r in records]
    ds = datasets.Dataset.from_list(rows)
    ds = ds.cast_column(image_field, datasets.List(datasets.Image()))
    ds.save_to_disk(str(out))
    return out


@pytest.mark.parametrize("name", ["messages.jsonl", "trl.jsonl", "smolvlm_texts.jsonl"])
def test_saved_hf_datasets_of_each_layout_give_the_same_samples(name, tmp_path):
    records = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
    from_json = load_samples(FIXTURES / name)
    if name == "trl.jsonl":  # arrow needs one type per column: TRL's plain-string form is tested in JSONL
        records = [r for r in records if not isinstance(r["prompt"], str)]
        from_json = [s for s in from_json if s.answer != "yes"]
    saved = load_samples(_save_hf(records, tmp_path / "hf"))
    by_json = {(s.answer, s.turn): s for s in from_json}
    assert len(saved) == len(from_json) == len(by_json)
    for s in saved:
        ref = by_json[(s.answer, s.turn)]
        assert s.messages == ref.messages and len(s.images) == len(ref.images)
        for a, b in zip(s.images, ref.images):  # embedded bytes cached by genrecal: same pixels
            assert a.parent.name == ".genrecal_images"
            assert (np.asarray(Image.open(a)) == np.asarray(Image.open(b))).all()


def test_unknown_layout_is_one_line_naming_the_fields(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"img": "a.png", "qa": ["q", "a"]}) + "\n")
    for on_bad in ("error", "skip"):
        with pytest.raises(DataError) as exc:
            load_samples(path, on_bad=on_bad)
        assert exc.value.reason == "bad_file" and "\n" not in str(exc.value)
        assert str(exc.value).startswith(f"{path}: record 0: no known record layout: fields found: img, qa; "
                                          "expected one of: conversations (LLaVA); messages (HF chat); "
                                          "prompt + completion (TRL prompt-completion); texts (SmolVLM texts)")


def test_unknown_layout_of_a_saved_dataset_names_its_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"question": "q", "answer": "a"}]).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match="fields found: answer, question; expected one of: conversations") as exc:
        load_samples(tmp_path / "hf")
    assert exc.value.reason == "bad_file"


def test_fixture_dir_copies_resolve_images_under_the_data_root(tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(FIXTURES, root)
    assert summary(load_samples(root / "trl.jsonl")) == EXPECTED["trl.jsonl"]
    assert all(p.is_relative_to(root.resolve()) for s in load_samples(root / "trl.jsonl") for p in s.images)


GOOD = {"images": ["images/red_circle.png"], "texts": [{"user": "Color?", "assistant": "red"}]}
MALFORMED = {
    "messages not a list": {"messages": "hello"},
    "content a number": {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
    "unknown part": {"messages": [{"role": "user", "content": [{"type": "audio"}]},
                                  {"role": "assistant", "content": "a"}]},
    "image an int": {"images": [5], "texts": [{"user": "q", "assistant": "a"}]},
    "image dict without path": {"images": [{"url": "x"}], "texts": [{"user": "q", "assistant": "a"}]},
    "texts without assistant": {"texts": [{"user": "q"}]},
    "completion a number": {"prompt": "q", "completion": 7},
    "two system turns": {"messages": [{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
                                      {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    "placeholder in the system turn": {"images": ["images/red_circle.png"], "messages": [
        {"role": "system", "content": "<image>"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"}]},
    "more placeholders than images": {"image": "images/red_circle.png", "conversations": [
        {"from": "human", "value": "<image><image>q"}, {"from": "gpt", "value": "a"}]},
    "ends on the user": {"texts": [], "prompt": [{"role": "user", "content": "q"}], "completion": []},
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_records_of_every_layout_are_one_line_each(case, tmp_path):
    shutil.copytree(FIXTURES / "images", tmp_path / "images")
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(MALFORMED[case]) + "\n")
    with pytest.raises(DataError) as exc:
        load_samples(path)
    assert (exc.value.reason, exc.value.index) == ("bad_record", 1) and "\n" not in str(exc.value)
    report = SkipReport()
    assert [s.answer for s in load_samples(path, on_bad="skip", report=report)] == ["red"]
    assert report.counts == {"bad_record": 1}
