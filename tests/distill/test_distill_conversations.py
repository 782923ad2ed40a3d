"""`genrecal-distill` on conversations as people have them: every layout's dry run, and real tiny runs on
data that mixes text-only and image samples, system turns and images in later turns."""
import json
import shutil
from pathlib import Path

import pytest

from genrecal.cli import main

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures" / "layouts"
TEACHER, STUDENT = "smolvlm", "qwen2_vl"


def hf_copy(name: str, out: Path) -> Path:
    """The JSONL fixture as a saved HF dataset with embedded images (how TRL / SmolVLM sets are shipped)."""
    datasets = pytest.importorskip("datasets")
    records = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
    records = [dict(r, images=[str(FIXTURES / p) for p in r.get("images", [])]) for r in records
               if not isinstance(r.get("prompt"), str)]  # arrow: one type per column
    ds = datasets.Dataset.from_list(records).cast_column("images", datasets.List(datasets.Image()))
    ds.save_to_disk(str(out))
    return out


@pytest.mark.parametrize("layout", ["llava.json", "messages.jsonl", "trl.jsonl", "smolvlm_texts.jsonl",
                                    "hf:trl.jsonl", "hf:smolvlm_texts.jsonl"])
def test_dry_run_of_every_layout_prints_prompt_and_answer_span(zoo_dir, tmp_path, capsys, layout):
    data = hf_copy(layout[3:], tmp_path / "hf") if layout.startswith("hf:") else FIXTURES / layout
    rc = main(["distill", "--teacher", zoo_dir(TEACHER), "--student", zoo_dir(STUDENT), "--data", str(data),
               "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0, out
    student, teacher = out.split("[student]")[1].split("[teacher]")
    system = "smolvlm_texts" not in layout  # the_cauldron has no system turns
    assert "family: qwen2_vl" in student and "image tokens for this sample: 16" in student
    assert ("<|im_start|>system\\nAnswer in one word.<|im_end|>\\n" in student) == system
    assert "<|vision_end|>What color is the shape?<|im_end|>\\n<|im_start|>assistant\\n'" in student
    assert "answer span decodes to: 'red<|im_end|>'" in student
    assert "family: smolvlm" in teacher
    assert ("System: Answer in one word.<end_of_utterance>\\n" in teacher) == system
    assert "User:<image> What color is the shape?<end_of_utterance>\\nAssistant:'" in teacher
    assert "answer span decodes to: ' red<end_of_utterance>'" in teacher
    assert "record 0 turn 0" in out and "1 image(s)" in out


def distill(zoo_dir, data, out, teacher=TEACHER, *extra):
    return main(["distill", "--teacher", zoo_dir(teacher), "--student", zoo_dir(STUDENT), "--data", str(data),
                 "--out", str(out), "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--no-progress", *extra])


def test_text_only_and_image_samples_train_together(zoo_dir, tmp_path):
    out = tmp_path / "run"
    assert distill(zoo_dir, FIXTURES / "llava.json", out) == 0
    assert json.loads((out / "skips.json").read_text())["total"] == 0  # all 5 samples, 2 of them text-only
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [ln["stage"] for ln in lines] == ["align", "distill", "sft"]
    assert all(ln["loss"] == ln["loss"] and ln["loss"] > 0 for ln in lines)  # finite, not NaN
    assert (out / "student" / "model.safetensors").is_file()


def test_require_image_and_a_teacher_without_system_role_are_counted(zoo_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    rc = distill(zoo_dir, data / "llava.json", tmp_path / "a", "llava", "--on-bad-sample", "skip",
                 "--batch-size", "2")
    assert rc == 0, capsys.readouterr().err
    skips = json.loads((tmp_path / "a" / "skips.json").read_text())
    assert skips["counts"] == {"no_system_role": 2}  # record 0's two turns; llava's template drops the system turn
    assert "record 0 turn 1" in skips["examples"]["no_system_role"][1]
    rc = distill(zoo_dir, data / "llava.json", tmp_path / "b", TEACHER, "--require-image")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "llava.json record 1: record has no image (no_image)" in err
