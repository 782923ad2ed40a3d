"""`genrecal data teacher-answers` on tiny real models: output genrecal-distill reads, batched generation,
resume after a kill, bad prompts, and the teacher's own ids on the teacher side of training."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genrecal.cli import main
from genrecal.data.render import render
from genrecal.data.samples import Sample, load_samples
from genrecal.data.teacher_answers import answer_text, end_of_turn, keep_matching_ids, render_teacher
from genrecal.distill.generate_answers import _stop_ids, generate
from genrecal.distill.models import load_vlm

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def answers_args(zoo_dir, data, out, *extra):
    return ["data", "teacher-answers", "--teacher", zoo_dir("llava"), "--data", data, "--out", str(out),
            "--batch-size", "3", "--max-new-tokens", "6", "--limit", "7", "--no-progress", *extra]


@pytest.fixture(scope="module")
def answered(zoo_dir, evqa_train, tmp_path_factory):
    out = tmp_path_factory.mktemp("answers") / "full"
    assert main(answers_args(zoo_dir, evqa_train, out)) == 0
    return out


@pytest.fixture(scope="module")
def teacher(zoo_dir):
    return load_vlm(zoo_dir("llava"), "teacher")


def test_output_is_llava_json_with_the_teachers_ids(answered, evqa_train, teacher):
    manifest = json.loads((answered / "manifest.json").read_text())
    assert manifest["complete"] and manifest["records"] == 7 and manifest["settings"]["batch_size"] == 3
    assert sorted(p.name for p in (answered / "parts").iterdir()) == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
    records = json.loads((answered / "data.json").read_text())
    assert [r["prompt_record"] for r in records] == list(range(7))
    prompts = json.loads((Path(evqa_train) / "data.json").read_text())[:7]
    samples = load_samples(answered)  # as is: the default image root is the output dir
    assert len(samples) == 7
    for sample, record, prompt in zip(samples, records, prompts):
        assert sample.answer_ids == record["teacher_answer_ids"] and sample.answer_ids
        assert answer_text(teacher.tokenizer, sample.answer_ids) == sample.answer
        assert sample.messages[0]["content"] == prompt["conversations"][0]["value"]
        source = Path(evqa_train) / prompt["image"]
        assert os.stat(sample.images[0]).st_ino == os.stat(source).st_ino  # hard-linked, not copied
    assert json.loads((answered / "skips.json").read_text())["total"] == 0


def test_batched_generation_equals_one_prompt_at_a_time(answered, teacher):
    samples = load_samples(answered)[:3]
    stops = _stop_ids(teacher, samples[0])
    together = generate(teacher, samples, 6, 4096, stops)
    alone = [generate(teacher, [s], 6, 4096, stops)[0] for s in samples]
    assert together == alone
    assert [r["ids"] for r in together] == [s.answer_ids for s in samples]  # what the CLI wrote


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3"])  # M-RoPE positions; token_type_ids
def test_batched_generation_left_pads_other_families(zoo_dir, evqa_train, family):
    teacher = load_vlm(zoo_dir(family), "teacher")
    samples = load_samples(evqa_train, prompts=True)[:3]
    stops = _stop_ids(teacher, samples[0])
    assert generate(teacher, samples, 5, 4096, stops) == [generate(teacher, [s], 5, 4096, stops)[0] for s in samples]


def test_teacher_side_renders_from_the_teachers_own_ids(answered, teacher):
    sample = load_samples(answered)[0]
    enc = render_teacher(teacher.processor, sample, None, 4096, teacher.image_token_id)
    suffix = teacher.tokenizer(end_of_turn(teacher.processor, sample), add_special_tokens=False)["input_ids"]
    assert enc.input_ids[enc.answer_start:enc.answer_end].tolist() == sample.answer_ids + suffix
    # ids that tokenising the text would not give: a whole-word token spelled out in pieces
    vocab = teacher.tokenizer.get_vocab()
    word = next(w for w in sorted(vocab) if w.isalpha() and len(w) > 2 and all("##" + c in vocab for c in w[1:]))
    pieces = [vocab[word[0]]] + [vocab["##" + c] for c in word[1:]]
    crafted = Sample(sample.images, sample.question_messages + [{"role": "assistant", "content": word}],
                     sample.source, sample.index, answer_ids=pieces)
    (kept,), dropped = keep_matching_ids([crafted], teacher.tokenizer)
    assert dropped == 0 and kept.answer_ids == pieces
    from_ids = render_teacher(teacher.processor, kept, None, 4096, teacher.image_token_id)
    from_text = render(teacher.processor, kept, None, 4096, teacher.image_token_id)
    assert from_ids.input_ids[from_ids.answer_start:from_ids.answer_end].tolist() == pieces + suffix
    assert from_text.input_ids[from_text.answer_start:from_text.answer_end].tolist() == [vocab[word]] + suffix
    assert from_ids.input_ids[:from_ids.answer_start].tolist() == from_text.input_ids[:from_text.answer_start].tolist()
    # ids that decode to something else (another teacher, an edited answer) are dropped: the text is used
    (other,), dropped = keep_matching_ids([Sample(crafted.images, crafted.messages, "x", 0, answer_ids=pieces[1:])],
                                          teacher.tokenizer)
    assert dropped == 1 and other.answer_ids is None


def test_distill_trains_on_the_output(answered, zoo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"), "--data", str(answered),
            "--out", str(out), "--max-steps", "3", "--batch-size", "2", "--no-progress"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [ln["stage"] for ln in lines] == ["align", "distill", "sft"] and lines[0]["ar"] > 0
    assert main(args[:7] + ["--dry-run"]) == 0
    assert "answer from: the teacher's own teacher_answer_ids" in capsys.readouterr().out


def test_resume_after_a_kill_redoes_no_finished_part(answered, zoo_dir, evqa_train, tmp_path):
    out = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "genrecal.cli", *answers_args(zoo_dir, evqa_train, out)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "parts" / "00000.jsonl").exists():
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted((out / "parts").iterdir())
    assert done and not (out / "data.json").exists(), "the run finished before it was killed"
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done}
    assert main(answers_args(zoo_dir, evqa_train, out)) == 0
    assert all((out / "parts" / n).stat().st_ino == ino and (out / "parts" / n).stat().st_mtime_ns == t
               for n, (ino, t) in stamps.items())
    assert (out / "data.json").read_text() == (answered / "data.json").read_text()


def test_other_settings_are_refused_in_one_line(answered, zoo_dir, evqa_train, capsys):
    before = (answered / "data.json").read_text()
    capsys.readouterr()
    assert main(answers_args(zoo_dir, evqa_train, answered, "--max-new-tokens", "9")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_new_tokens" in err and "another --out" in err
    assert (answered / "data.json").read_text() == before


def test_bad_prompts_are_counted_or_refused(zoo_dir, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "ok.png")
    prompts = [{"image": "ok.png", "conversations": [{"from": "human", "value": "<image>\nwhat shape?"}]},
               {"image": "missing.png", "conversations": [{"from": "human", "value": "<image>\nwhat colour?"}]},
               {"conversations": [{"from": "gpt", "value": "an answer with no question"}]},
               {"messages": [{"role": "user", "content": "no image here: say hi"}]}]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    args = ["data", "teacher-answers", "--teacher", zoo_dir("llava"), "--data", str(tmp_path / "prompts.json"),
            "--max-new-tokens", "3", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after any zoo build's progress bar
    assert last.startswith("error: ") and "missing.png" in last and "Traceback" not in err
    assert main(args + ["--out", str(tmp_path / "skip"), "--on-bad-sample", "skip"]) == 0
    skips = json.loads((tmp_path / "skip" / "skips.json").read_text())
    assert skips["counts"] == {"bad_record": 1, "missing_image": 1}
    records = json.loads((tmp_path / "skip" / "data.json").read_text())
    assert [r["prompt_record"] for r in records] == [0, 3] and records[1]["images"] == []
    (tmp_path / "none.json").write_text(json.dumps(prompts[1:3]))
    args[args.index("--data") + 1] = str(tmp_path / "none.json")
    assert main(args + ["--out", str(tmp_path / "none"), "--on-bad-sample", "skip"]) == 2
    assert "no usable prompts (skipped 2" in capsys.readouterr().err


def test_bad_teacher_answer_ids_field_is_a_bad_record(tmp_path):
    from genrecal.data.samples import DataError

    record = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
              "teacher_answer_ids": ["yo"]}
    (tmp_path / "d.json").write_text(json.dumps([record]))
    with pytest.raises(DataError, match="teacher_answer_ids"):
        load_samples(tmp_path / "d.json")


def test_prompts_keep_earlier_turns_and_drop_the_final_answer(tmp_path):
    records = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a?"},
                             {"role": "assistant", "content": "A"}, {"role": "user", "content": "b?"},
                             {"role": "assistant", "content": "old answer"}]},
               {"conversations": [{"from": "human", "value": "c?"}]}]
    (tmp_path / "p.json").write_text(json.dumps(records))
    first, second = load_samples(tmp_path / "p.json", prompts=True)
    assert [m["content"] for m in first.messages] == ["be brief", "a?", "A", "b?", ""] and first.turn == 1
    assert [m["content"] for m in second.messages] == ["c?", ""] and second.turn == 0
