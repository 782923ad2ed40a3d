"""Every kind of bad record: raised with file, index and reason, or skipped and counted."""

import os
import pickle

import pytest

from genrecal.data import DataError, SkipReport, load_samples

GOOD = 0  # index of the good record put before each bad one


def _corrupt(root, kit):
    (root / "images" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return kit.record(image="images/bad.png")


def _truncated(root, kit):
    data = kit.png_bytes(size=64)
    (root / "images" / "half.png").write_bytes(data[: len(data) // 2])
    return kit.record(image="images/half.png")


def _missing(root, kit):
    return kit.record(image="images/x.png")


def _empty_answer(root, kit):
    return kit.record(answer="  \n ")


def _no_image(root, kit):
    return kit.record(image=None, question="What color?")


def _too_long(root, kit):
    return kit.record(question="<image>\n" + "why? " * 50)


def _escape_relative(root, kit):
    kit.write_png(root.parent / "outside.png")
    return kit.record(image="../outside.png")


def _escape_absolute(root, kit):
    return kit.record(image=str(kit.write_png(root.parent / "elsewhere" / "abs.png")))


def _escape_symlink(root, kit):
    target = kit.write_png(root.parent / "secret.png")
    os.symlink(target, root / "images" / "link.png")
    return kit.record(image="images/link.png")


def _bad_record(root, kit):
    return {"image": "images/a.png", "conversations": [{"from": "robot", "value": "beep"}]}


def _tiny_image(root, kit):
    kit.write_png(root / "images" / "tiny.png", size=6)  # under genrecal.images.MIN_SIDE
    return kit.record(image="images/tiny.png")


def _late_system(root, kit):
    rec = kit.record()
    rec["conversations"].insert(1, {"from": "system", "value": "be brief"})
    return rec


def _unknown_layout(root, kit):  # after a record in a known layout: one bad record, not a bad file
    return {"img": "images/a.png", "qa": ["What color?", "red"]}


CASES = {
    "corrupt": (_corrupt, "corrupt_image"),
    "truncated": (_truncated, "corrupt_image"),
    "missing": (_missing, "missing_image"),
    "empty_answer": (_empty_answer, "empty_answer"),
    "no_image": (_no_image, "no_image"),
    "too_long": (_too_long, "too_long"),
    "escape_relative": (_escape_relative, "path_escape"),
    "escape_absolute": (_escape_absolute, "path_escape"),
    "escape_symlink": (_escape_symlink, "path_escape"),
    "bad_record": (_bad_record, "bad_record"),
    "tiny_image": (_tiny_image, "image_size"),
    "late_system": (_late_system, "bad_record"),
    "unknown_layout": (_unknown_layout, "bad_record"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_bad_record_raises_with_file_index_and_reason(case, fmt, dataset_dir, kit):
    make, reason = CASES[case]
    records = [kit.record(), make(dataset_dir, kit)]
    write = kit.write_json if fmt == "json" else kit.write_jsonl
    path = write(dataset_dir / f"data.{fmt}", records)
    with pytest.raises(DataError) as exc:
        load_samples(path, max_chars=200, require_image=True)
    err = exc.value
    assert (err.reason, err.index, err.source) == (reason, 1, str(path))
    message = str(err)
    assert "\n" not in message
    assert f"data.{fmt} record 1" in message and f"({reason})" in message
    assert pickle.loads(pickle.dumps(err)).reason == reason  # survives DataLoader workers


def test_missing_image_message_names_the_path(dataset_dir, kit):
    path = kit.write_json(dataset_dir / "data.json", [kit.record(), _missing(dataset_dir, kit)])
    with pytest.raises(DataError) as exc:
        load_samples(path)
    assert str(exc.value) == f"{path} record 1: missing image file 'images/x.png' (missing_image)"


def test_skip_counts_every_reason_and_keeps_the_good(dataset_dir, kit):
    records = [kit.record()]
    for make, _ in CASES.values():
        records.append(make(dataset_dir, kit))
    records.append(_missing(dataset_dir, kit))  # a second missing image: counted twice
    records.append(kit.record(image="images/b.png", answer="blue"))
    records.append("not an object")
    path = kit.write_json(dataset_dir / "data.json", records)

    report = SkipReport()
    samples = load_samples(path, on_bad="skip", report=report, max_chars=200, require_image=True)

    assert [(s.index, s.answer) for s in samples] == [(0, "red"), (15, "blue")]
    assert report.as_dict()["counts"] == {
        "bad_record": 4, "corrupt_image": 2, "empty_answer": 1, "image_size": 1, "missing_image": 2,
        "no_image": 1, "path_escape": 3, "too_long": 1,
    }
    assert report.total == 15
    assert report.summary().startswith("skipped 15 (bad_record 4")
    assert any("record 3" in ex for ex in report.as_dict()["examples"]["missing_image"])


def test_skip_drops_only_the_bad_turn(dataset_dir, kit):
    conv = [("human", "<image>\nColor?"), ("gpt", ""), ("human", "Shape?"), ("gpt", "square")]
    rec = {"image": "images/a.png", "conversations": [{"from": f, "value": v} for f, v in conv]}
    report = SkipReport()
    samples = load_samples(kit.write_json(dataset_dir / "data.json", [rec]),
                           on_bad="skip", report=report)
    assert [(s.turn, s.answer) for s in samples] == [(1, "square")]
    assert report.counts == {"empty_answer": 1}
    assert "record 0 turn 0" in report.examples["empty_answer"][0]


def test_bad_json_line_is_one_bad_record(dataset_dir, kit):
    path = dataset_dir / "data.jsonl"
    kit.write_jsonl(path, [kit.record()])
    with path.open("a") as f:
        f.write("{not json\n\n")
    kit.write_jsonl(dataset_dir / "tail.jsonl", [kit.record(answer="again")])
    with path.open("a") as f:
        f.write((dataset_dir / "tail.jsonl").read_text())
    report = SkipReport()
    samples = load_samples(path, on_bad="skip", report=report)
    assert [(s.index, s.answer) for s in samples] == [(0, "red"), (2, "again")]
    assert report.counts == {"bad_record": 1}


def test_each_image_is_verified_once(dataset_dir, kit, monkeypatch):
    from genrecal.data import images
    calls = []
    real = images._verify
    monkeypatch.setattr(images, "_verify", lambda p: calls.append(p) or real(p))
    path = kit.write_json(dataset_dir / "data.json", [kit.record()] * 5 + [_missing(dataset_dir, kit)] * 3)
    samples = load_samples(path, on_bad="skip")
    assert len(samples) == 5
    assert len(calls) == 2


def test_on_bad_is_validated(dataset_dir, kit):
    path = kit.write_json(dataset_dir / "data.json", [kit.record()])
    with pytest.raises(ValueError, match="on_bad"):
        load_samples(path, on_bad="ignore")
