"""Loading well-formed LLaVA JSON / JSONL and HF datasets, and splitting multi-turn chats."""

import json

import pytest
from PIL import Image

from genrecal.data import DataError, Sample, load_samples


def test_llava_json_loads(dataset_dir, kit):
    path = kit.write_json(dataset_dir / "data.json", [
        kit.record(id="r0"),
        kit.record(image="images/b.png", question="Which shape?\n<image>", answer="circle"),
    ])
    samples = load_samples(path)
    assert len(samples) == 2
    first = samples[0]
    assert isinstance(first, Sample)
    assert first.images == [(dataset_dir / "images" / "a.png").resolve()]
    assert first.images[0].is_absolute()
    assert first.messages == [
        {"role": "user", "content": "<image>\nWhat color?"},
        {"role": "assistant", "content": "red"},
    ]
    assert first.answer == "red"
    assert first.question_messages == first.messages[:-1]
    assert (first.source, first.index, first.turn) == (str(path), 0, 0)
    assert samples[1].index == 1 and samples[1].answer == "circle"


def test_llava_jsonl_and_directory_load(dataset_dir, kit):
    records = [kit.record(), kit.record(image="images/b.png", answer="blue")]
    path = kit.write_jsonl(dataset_dir / "data.jsonl", records)
    from_file = load_samples(path)
    from_dir = load_samples(dataset_dir)
    assert [s.answer for s in from_file] == ["red", "blue"]
    assert [(s.images, s.messages, s.index) for s in from_dir] == [
        (s.images, s.messages, s.index) for s in from_file
    ]


def test_missing_placeholder_is_prepended_once_per_image(dataset_dir, kit):
    path = kit.write_json(dataset_dir / "data.json", [
        kit.record(image=["images/a.png", "images/b.png"], question="Compare them."),
    ])
    (sample,) = load_samples(path)
    assert sample.messages[0]["content"] == "<image>\n<image>\nCompare them."
    assert len(sample.images) == 2


def test_placeholder_count_mismatch_is_bad_record(dataset_dir, kit):
    path = kit.write_json(dataset_dir / "data.json", [
        kit.record(image=["images/a.png", "images/b.png"], question="<image>\nCompare."),
    ])
    with pytest.raises(DataError) as exc:
        load_samples(path)
    assert exc.value.reason == "bad_record"


def test_multi_turn_record_splits_into_one_sample_per_answer(dataset_dir, kit):
    turns = [
        ("human", "<image>\nWhat color is the square?"), ("gpt", "red"),
        ("human", "And the background?"), ("gpt", "noisy"),
        ("human", "Is there a circle?"), ("gpt", "no"),
    ]
    rec = {"image": "images/a.png", "conversations": [{"from": f, "value": v} for f, v in turns]}
    samples = load_samples(kit.write_json(dataset_dir / "data.json", [rec]))
    assert [s.turn for s in samples] == [0, 1, 2]
    assert [s.answer for s in samples] == ["red", "noisy", "no"]
    assert [len(s.messages) for s in samples] == [2, 4, 6]
    last = samples[-1]
    assert [m["role"] for m in last.messages] == ["user", "assistant"] * 3
    assert last.question_messages[2] == {"role": "user", "content": "And the background?"}
    assert all(s.images == samples[0].images and s.index == 0 for s in samples)
    # splitting copies messages: editing one sample never changes another
    samples[0].messages[0]["content"] = "changed"
    assert samples[1].messages[0]["content"] == "<image>\nWhat color is the square?"


def test_text_only_allowed_when_images_not_required(dataset_dir, kit):
    path = kit.write_json(dataset_dir / "data.json", [kit.record(image=None, question="Hi?")])
    (sample,) = load_samples(path, require_image=False)
    assert sample.images == [] and sample.answer == "red"


def test_image_root_and_absolute_path_inside_root(dataset_dir, kit, tmp_path):
    data = kit.write_json(tmp_path / "meta" / "train.json", [
        kit.record(image="images/a.png"),
        kit.record(image=str(dataset_dir / "images" / "b.png")),
    ])
    samples = load_samples(data, image_root=dataset_dir)
    assert [s.images[0].name for s in samples] == ["a.png", "b.png"]


def _save_hf(path, rows, kit):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({
        "messages": [r["messages"] for r in rows],
        "images": [r["images"] for r in rows],
    }, features=datasets.Features({
        "messages": datasets.List({
            "role": datasets.Value("string"),
            "content": datasets.List({
                "type": datasets.Value("string"), "text": datasets.Value("string"),
            }),
        }),
        "images": datasets.List(datasets.Image()),
    }))
    ds.save_to_disk(str(path))
    return path


def _parts(*items):
    return [{"type": "image", "text": None} if i is None else {"type": "text", "text": i}
            for i in items]


def test_hf_saved_dataset_with_messages_loads(tmp_path, kit):
    import io
    red = Image.open(io.BytesIO(kit.png_bytes(color="red")))
    blue = Image.open(io.BytesIO(kit.png_bytes(color="blue")))
    rows = [
        {"messages": [
            {"role": "user", "content": _parts(None, "What color?")},
            {"role": "assistant", "content": _parts("red")},
        ], "images": [red]},
        {"messages": [
            {"role": "user", "content": _parts("Compare", None, None)},
            {"role": "assistant", "content": _parts("different")},
            {"role": "user", "content": _parts("Which is blue?")},
            {"role": "assistant", "content": _parts("the second")},
        ], "images": [red, blue]},
    ]
    path = _save_hf(tmp_path / "hf", rows, kit)
    samples = load_samples(path)
    assert [(s.index, s.turn, s.answer) for s in samples] == [
        (0, 0, "red"), (1, 0, "different"), (1, 1, "the second"),
    ]
    assert samples[0].messages[0] == {"role": "user", "content": "<image>\nWhat color?"}
    assert samples[1].messages[0]["content"] == "Compare\n<image>\n<image>"
    for s in samples:
        assert all(p.is_absolute() and p.is_file() for p in s.images)
        assert all(p.parent == (path / ".genrecal_images").resolve() for p in s.images)
    assert samples[0].images[0] == samples[1].images[0]  # same bytes, one cached file
    assert samples[1].images[1] != samples[1].images[0]
    with Image.open(samples[1].images[1]) as im:
        assert im.size == (32, 32)
    assert load_samples(path) == samples  # second load reuses the cache


def test_hf_dataset_with_path_strings(dataset_dir):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({
        "messages": [[{"role": "user", "content": "<image>\nColor?"},
                      {"role": "assistant", "content": "blue"}]],
        "images": [["images/b.png"]],
    })
    ds.save_to_disk(str(dataset_dir / "hf"))
    (sample,) = load_samples(dataset_dir / "hf", image_root=dataset_dir)
    assert sample.images == [(dataset_dir / "images" / "b.png").resolve()]
    assert sample.answer == "blue"


def test_missing_data_file_raises_even_when_skipping(tmp_path):
    for on_bad in ("error", "skip"):
        with pytest.raises(DataError) as exc:
            load_samples(tmp_path / "nope.json", on_bad=on_bad)
        assert exc.value.reason == "missing_file"
        assert "nope.json" in str(exc.value)


def test_data_file_that_is_not_a_list_is_bad_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"conversations": []}))
    with pytest.raises(DataError) as exc:
        load_samples(path, on_bad="skip")
    assert exc.value.reason == "bad_file"


def test_hf_corrupt_image_bytes_are_one_bad_record(tmp_path, kit):
    rows = [
        {"messages": [{"role": "user", "content": _parts(None, "Q?")},
                      {"role": "assistant", "content": _parts("a")}],
         "images": [{"bytes": b"\x89PNG garbage", "path": None}]},
        {"messages": [{"role": "user", "content": _parts(None, "Q?")},
                      {"role": "assistant", "content": _parts("b")}],
         "images": [{"bytes": kit.png_bytes(), "path": None}]},
    ]
    path = _save_hf(tmp_path / "hf", rows, kit)
    with pytest.raises(DataError) as exc:
        load_samples(path)
    assert (exc.value.reason, exc.value.index, exc.value.source) == ("corrupt_image", 0, str(path))
    assert [s.answer for s in load_samples(path, on_bad="skip")] == ["b"]
