"""Subprocess tests: 2 gloo processes == 1 process with gradient accumulation; SIGKILL + --resume == uninterrupted."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def distill_cmd(zoo_dir, data, out, *extra):
    return ["-m", "genrecal.cli", "distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"),
            "--data", data, "--out", str(out), "--lr", "1e-3", "--no-progress", *extra]


def max_diff(a_dir, b_dir, name):
    a, b = load_file(str(Path(a_dir) / name)), load_file(str(Path(b_dir) / name))
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_processes_equal_one_process_with_accumulation(zoo_dir, evqa_train, tmp_path):
    common = ["--max-steps", "5", "--batch-size", "2"]
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           *distill_cmd(zoo_dir, evqa_train, tmp_path / "ddp", *common, "--grad-accum", "1")]
    one = [sys.executable, *distill_cmd(zoo_dir, evqa_train, tmp_path / "acc", *common, "--grad-accum", "2")]
    for cmd in (two, one):
        subprocess.run(cmd, check=True, env=ENV, capture_output=True, timeout=300)
    ddp = [json.loads(x) for x in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    acc = [json.loads(x) for x in (tmp_path / "acc" / "train_log.jsonl").read_text().splitlines()]
    assert len(ddp) == len(acc) == 5  # only the main process logs
    for a, b in zip(ddp, acc):
        assert abs(a["loss"] - b["loss"]) < 1e-5
    # same global batch, same order: differences are float summation order only
    assert max_diff(tmp_path / "ddp" / "student", tmp_path / "acc" / "student", "model.safetensors") < 1e-5
    assert max_diff(tmp_path / "ddp" / "recalibrator", tmp_path / "acc" / "recalibrator",
                    "recalibrator.safetensors") < 1e-5


def test_sigkill_then_resume_equals_uninterrupted(zoo_dir, evqa_train, tmp_path):
    common = ["--max-steps", "20", "--batch-size", "8", "--checkpoint-every", "1"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, *distill_cmd(zoo_dir, evqa_train, full, *common)], check=True, env=ENV,
                   capture_output=True, timeout=300)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, *distill_cmd(zoo_dir, evqa_train, cut, *common)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = cut / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill inside stage 2 (align has 4 steps, distill 12)
        if log.exists() and len(log.read_text().splitlines()) >= 7:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert not (cut / "student").exists() and len(lines) < 20, "the run finished before it was killed"
    assert lines[-1]["stage"] == "distill"
    subprocess.run([sys.executable, *distill_cmd(zoo_dir, evqa_train, cut, *common, "--resume")], check=True,
                   env=ENV, capture_output=True, timeout=300)
    assert max_diff(full / "student", cut / "student", "model.safetensors") == 0.0
    assert max_diff(full / "recalibrator", cut / "recalibrator", "recalibrator.safetensors") == 0.0
    a = (full / "train_log.jsonl").read_text().splitlines()
    b = (cut / "train_log.jsonl").read_text().splitlines()
    strip = lambda s: {k: v for k, v in json.loads(s).items() if k != "seconds"}  # noqa: E731
    assert [strip(x) for x in a] == [strip(x) for x in b]


def test_stage_per_launch_equals_one_launch(zoo_dir, evqa_train, tmp_path):
    """The FSDP/ZeRO-3 recipe: --stop-after align, then --resume --stop-after distill, then --resume."""
    common = ["--max-steps", "5", "--batch-size", "4", "--checkpoint-every", "100"]
    one, split = tmp_path / "one", tmp_path / "split"
    subprocess.run([sys.executable, *distill_cmd(zoo_dir, evqa_train, one, *common)], check=True, env=ENV,
                   capture_output=True, timeout=300)
    for extra in (["--stop-after", "align"], ["--resume", "--stop-after", "distill"], ["--resume"]):
        done = subprocess.run([sys.executable, *distill_cmd(zoo_dir, evqa_train, split, *common, *extra)],
                              check=True, env=ENV, capture_output=True, text=True, timeout=300)
        if extra[-1] == "align":  # the run is not finished after one stage
            assert not (split / "student").exists() and "continue with --resume" in done.stdout
    assert max_diff(one / "student", split / "student", "model.safetensors") == 0.0
    assert max_diff(one / "recalibrator", split / "recalibrator", "recalibrator.safetensors") == 0.0
    stages = [json.loads(x)["stage"] for x in (split / "train_log.jsonl").read_text().splitlines()]
    assert stages == ["align", "distill", "distill", "distill", "sft"]


def test_sharded_launches_train_one_stage_each():
    from types import SimpleNamespace

    import pytest
    from accelerate.utils import DistributedType

    from genrecal.distill.config import ConfigError
    from genrecal.distill.launch import check_one_stage_per_launch

    fsdp = SimpleNamespace(distributed_type=DistributedType.FSDP)
    check_one_stage_per_launch(fsdp, ["distill"])
    with pytest.raises(ConfigError, match="--stop-after align"):
        check_one_stage_per_launch(fsdp, ["align", "distill", "sft"])
    check_one_stage_per_launch(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU), ["align", "distill"])
