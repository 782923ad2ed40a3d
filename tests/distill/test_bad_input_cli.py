"""Bad input through `genrecal-distill`: `error` stops with file + record index (no traceback);
`skip` finishes and reports the count per reason."""
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from genrecal.cli import main

GOOD = 12


def png(path: Path, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), color).save(path)


def rec(image, question="what color is the shape?", answer="red"):
    r = {"conversations": [{"from": "human", "value": f"<image>\n{question}" if image else question},
                           {"from": "gpt", "value": answer}]}
    if image:
        r["image"] = image
    return r


def make_bad(root: Path, kind: str) -> dict:
    if kind == "corrupt_image":
        (root / "images" / "corrupt.png").write_bytes(b"\x89PNG not really a png")
        return rec("images/corrupt.png")
    if kind == "truncated_image":
        buf = io.BytesIO()
        Image.effect_noise((64, 64), 60).convert("RGB").save(buf, "PNG")
        (root / "images" / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        return rec("images/cut.png")
    if kind == "missing_image":
        return rec("images/does-not-exist.png")
    if kind == "empty_answer":
        return rec("images/good0.png", answer="   ")
    if kind == "no_image":
        return rec(None)
    if kind == "too_long":
        return rec("images/good0.png", question="is the shape red? " * 40)
    if kind == "path_escape":
        png(root.parent / "outside.png")
        return rec("../outside.png")
    raise ValueError(kind)


REASON = {"truncated_image": "corrupt_image"}
KINDS = ["corrupt_image", "truncated_image", "missing_image", "empty_answer", "no_image", "too_long", "path_escape"]


def dataset(tmp_path: Path, kinds: list[str]) -> Path:
    root = tmp_path / "data"
    for i in range(GOOD):
        png(root / "images" / f"good{i}.png", (20 * i, 100, 200 - 10 * i))
    records = [rec(f"images/good{i}.png") for i in range(GOOD)]
    for kind in kinds:
        records.insert(5, make_bad(root, kind))  # bad records sit in the middle
    (root / "data.json").write_text(json.dumps(records))
    return root


def distill(zoo_dir, data, out, *extra):
    return main(["distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"), "--data", str(data),
                 "--out", str(out), "--max-steps", "3", "--batch-size", "4", "--max-length", "120",
                 "--no-progress", *extra])


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_stops_with_file_and_index(zoo_dir, tmp_path, capsys, kind):
    data = dataset(tmp_path, [kind])
    rc = distill(zoo_dir, data, tmp_path / "out", *(["--require-image"] if kind == "no_image" else []))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    assert "data.json" in err and "record 5" in err, err
    assert REASON.get(kind, kind) in err, err
    assert not (tmp_path / "out" / "student").exists()


def test_skip_finishes_and_counts_per_reason(zoo_dir, tmp_path, capsys):
    data = dataset(tmp_path, KINDS)
    rc = distill(zoo_dir, data, tmp_path / "out", "--on-bad-sample", "skip", "--require-image")
    assert rc == 0, capsys.readouterr().err
    skips = json.loads((tmp_path / "out" / "skips.json").read_text())
    assert skips["total"] == len(KINDS)
    assert skips["counts"] == {"corrupt_image": 2, "missing_image": 1, "empty_answer": 1, "no_image": 1,
                               "too_long": 1, "path_escape": 1}
    assert (tmp_path / "out" / "student" / "model.safetensors").is_file()


def test_missing_data_file(zoo_dir, tmp_path, capsys):
    rc = distill(zoo_dir, tmp_path / "nope.json", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and "nope.json" in err and "Traceback" not in err
