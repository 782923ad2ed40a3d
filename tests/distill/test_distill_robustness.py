"""Files that can't lie and runs that can't collide, through `genrecal-distill` on tiny zoo models:
damaged safetensors, a damaged latest checkpoint, a full disk, data rewritten between launches, a
tokenizer without a pad token. Every case ends in one `error:` line (or a stated fallback), never a
traceback. See docs/robustness.md."""
import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from genrecal.cli import main


def run(zoo_dir, data, out, *extra, student="qwen2_vl", teacher="llava", steps=4):
    args = ["distill", "--student", student if os.sep in student else zoo_dir(student), "--data", str(data),
            "--out", str(out), "--max-steps", str(steps), "--batch-size", "4", "--checkpoint-every", "1",
            "--max-length", "200", "--no-progress"]
    if teacher:
        args += ["--teacher", teacher if os.sep in teacher else zoo_dir(teacher)]
    return main(args + list(extra))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def damaged_copy(src: str, dst: Path, how: str) -> Path:
    shutil.copytree(src, dst)
    weights = next(dst.glob("*.safetensors"))
    damage(weights, how)
    return weights


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else os.urandom(4096))


@pytest.fixture
def data_copy(evqa_train, tmp_path) -> Path:
    """The easy-vqa set copied, so a test may rewrite its data.json."""
    dst = tmp_path / "data"
    shutil.copytree(evqa_train, dst)
    return dst


# ---- truncated / garbage safetensors ----
@pytest.mark.parametrize("role", ["student", "teacher"])
@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_damaged_weights_in_dry_run_name_the_file(zoo_dir, evqa_train, tmp_path, capsys, role, how):
    bad = damaged_copy(zoo_dir("qwen2_vl" if role == "student" else "llava"), tmp_path / role, how)
    models = {"student": str(tmp_path / role)} if role == "student" else {"teacher": str(tmp_path / role)}
    rc = run(zoo_dir, evqa_train, tmp_path / "out", "--dry-run", **models)
    line = one_line_error(capsys)
    assert rc == 2 and str(bad) in line and "not a valid safetensors file" in line and role in line, line


def test_damaged_teacher_weights_in_a_run(zoo_dir, evqa_train, tmp_path, capsys):
    bad = damaged_copy(zoo_dir("llava"), tmp_path / "teacher", "truncated")
    assert run(zoo_dir, evqa_train, tmp_path / "out", teacher=str(tmp_path / "teacher")) == 2
    assert str(bad) in one_line_error(capsys)


# ---- --resume over a damaged latest checkpoint ----
def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").glob("step-*"))


def test_checkpoint_records_checksums(zoo_dir, evqa_train, tmp_path):
    out = tmp_path / "run"
    assert run(zoo_dir, evqa_train, out, "--stop-after", "distill") == 0
    state = json.loads((out / "checkpoints" / "step-0000003" / "state.json").read_text())
    assert set(state["files"]) == {"weights.safetensors", "optim.pt"}
    assert all(len(v["sha256"]) == 64 and v["size"] > 0 for v in state["files"].values())
    assert state["data"]["sha256"] and state["data"]["path"] == str(evqa_train)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_resume_falls_back_from_a_damaged_latest_checkpoint(zoo_dir, evqa_train, tmp_path, capsys, how):
    out = tmp_path / "run"
    assert run(zoo_dir, evqa_train, out, "--stop-after", "distill") == 0  # steps 1-3 of 4; keeps 2 and 3
    assert checkpoints(out) == ["step-0000002", "step-0000003"]
    damage(out / "checkpoints" / "step-0000003" / "weights.safetensors", how)
    capsys.readouterr()
    assert run(zoo_dir, evqa_train, out, "--resume") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "step-0000003 is damaged" in err and "weights.safetensors" in err and "resuming from step-0000002" in err
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in log] == [1, 2, 3, 4]  # step 3 trained again from step 2's state
    assert (out / "student" / "model.safetensors").is_file()


def test_resume_with_every_checkpoint_damaged_is_one_line(zoo_dir, evqa_train, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(zoo_dir, evqa_train, out, "--stop-after", "distill") == 0
    for name in checkpoints(out):
        damage(out / "checkpoints" / name / "weights.safetensors", "truncated")
    capsys.readouterr()
    assert run(zoo_dir, evqa_train, out, "--resume") == 2
    line = one_line_error(capsys)
    assert "no complete checkpoint" in line and "step-0000002" in line and "step-0000003" in line, line
    assert run(zoo_dir, evqa_train, out) == 2  # damaged checkpoints still mark the run as taken
    assert "--resume" in one_line_error(capsys)


# ---- disk full ----
def _fill_disk_after(nbytes: int):
    def write(*args, **kwargs):
        path = Path(args[1] if len(args) > 1 else kwargs["filename"])
        path.write_bytes(b"\0" * nbytes)  # what made it to disk before the device filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return write


def test_disk_full_while_checkpointing(zoo_dir, evqa_train, tmp_path, capsys, monkeypatch):
    from genrecal.distill import checkpoint

    out = tmp_path / "run"
    assert run(zoo_dir, evqa_train, out, "--stop-after", "align") == 0  # step-0000001
    monkeypatch.setattr(checkpoint, "save_file", _fill_disk_after(1000))
    capsys.readouterr()
    assert run(zoo_dir, evqa_train, out, "--resume") == 2
    line = one_line_error(capsys)
    assert "disk full" in line and str(out / "checkpoints") in line and "step-0000002" in line, line
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step-0000001"]  # no partial dir, no temp files
    assert (ckpt / "latest").read_text() == "step-0000001"
    monkeypatch.undo()
    capsys.readouterr()
    assert run(zoo_dir, evqa_train, out, "--resume") == 0  # space freed: the run goes on


def test_disk_full_as_torch_save_reports_it(zoo_dir, evqa_train, tmp_path, capsys, monkeypatch):
    """torch.save says "unexpected pos" when the disk fills; with almost nothing free that is a full disk."""
    from collections import namedtuple

    from genrecal.artifacts import integrity
    from genrecal.distill import checkpoint

    def short_write(obj, f, *a, **k):
        Path(f).write_bytes(b"\0" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", short_write)
    monkeypatch.setattr(integrity.shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30, 4096))
    assert run(zoo_dir, evqa_train, tmp_path / "run") == 2
    line = one_line_error(capsys)
    assert "disk full" in line and "0.0 MiB free" in line, line
    assert not list((tmp_path / "run" / "checkpoints").glob("*step-*"))


def test_disk_full_writing_the_student(zoo_dir, evqa_train, tmp_path, capsys, monkeypatch):
    import transformers.modeling_utils as mu

    out = tmp_path / "run"
    monkeypatch.setattr(mu, "safe_save_file", _fill_disk_after(500))
    assert run(zoo_dir, evqa_train, out, steps=3) == 2
    line = one_line_error(capsys)
    assert "disk full" in line and str(out) in line, line
    assert not (out / "student").exists() and not list(out.glob(".student*"))


# ---- data rewritten between --stop-after and --resume ----
def test_data_rewritten_before_resume_is_refused(zoo_dir, data_copy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(zoo_dir, data_copy, out, "--stop-after", "align") == 0
    records = json.loads((data_copy / "data.json").read_text())
    records[0]["conversations"][-1]["value"] = "purple"
    (data_copy / "data.json").write_text(json.dumps(records))
    capsys.readouterr()
    assert run(zoo_dir, data_copy, out, "--resume") == 2
    line = one_line_error(capsys)
    assert "changed since checkpoint step-0000001" in line and "data.json" in line and \
        "--allow-data-change" in line, line
    assert run(zoo_dir, data_copy, out, "--resume", "--allow-data-change") == 0


def test_data_unchanged_resumes(zoo_dir, data_copy, tmp_path):
    out = tmp_path / "run"
    assert run(zoo_dir, data_copy, out, "--stop-after", "align") == 0
    (data_copy / "data.json").touch()  # a new mtime, the same bytes
    assert run(zoo_dir, data_copy, out, "--resume") == 0


# ---- a tokenizer without a pad token ----
@pytest.fixture(scope="module")
def no_pad_student(zoo_dir, tmp_path_factory) -> str:
    from transformers import AutoProcessor

    dst = tmp_path_factory.mktemp("nopad") / "qwen2_vl"
    shutil.copytree(zoo_dir("qwen2_vl"), dst)
    processor = AutoProcessor.from_pretrained(dst)
    processor.tokenizer.pad_token = None
    processor.save_pretrained(dst)
    gen = json.loads((dst / "generation_config.json").read_text())
    gen.pop("pad_token_id", None)  # nothing names a pad token: the eos rule applies
    (dst / "generation_config.json").write_text(json.dumps(gen))
    assert AutoProcessor.from_pretrained(dst).tokenizer.pad_token_id is None
    return str(dst)


def test_student_without_pad_token_pads_with_eos(zoo_dir, evqa_train, tmp_path, capsys, no_pad_student):
    from transformers import AutoProcessor

    out = tmp_path / "run"
    assert run(zoo_dir, evqa_train, out, student=no_pad_student, steps=3) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "has no pad token" in err and "eos" in err, err
    # the saved student's tokenizer is the user's: no pad token was added to it
    assert AutoProcessor.from_pretrained(out / "student").tokenizer.pad_token_id is None


def test_dry_run_states_the_pad_fallback(zoo_dir, evqa_train, capsys, no_pad_student):
    assert run(zoo_dir, evqa_train, "unused", "--dry-run", student=no_pad_student) == 0
    assert "pads with its eos" in capsys.readouterr().out
