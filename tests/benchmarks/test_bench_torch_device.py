"""genrecal-bench on a bf16 HF checkpoint: --device / --dtype reach the torch runtime, the result says
what was computed (precision, checkpoint precision, device), and the bandwidth bound sizes the weights
as they are held in memory.

    python -m pytest tests/benchmarks/test_bench_torch_device.py -q
"""
from __future__ import annotations

import json

import pytest
import torch

from genrecal.benchmarks import bandwidth

CUDA = torch.cuda.is_available()
FAST = ("--threads", "1", "--warmup", "0", "--runs", "1", "--max-new-tokens", "4", "--no-bandwidth")


@pytest.fixture(scope="module")
def bf16_student(bf16_zoo_dir) -> str:
    return bf16_zoo_dir("smolvlm")


def _latency(bench, artifact, tmp_path, *extra) -> dict:
    code, _, err = bench("latency", "--artifact", artifact, *FAST, *extra, "--json", tmp_path / "l.json")
    assert code == 0, err
    return json.loads((tmp_path / "l.json").read_text())


@pytest.mark.skipif(CUDA, reason="auto picks CUDA on this machine; see the gpu test")
def test_latency_of_a_bf16_checkpoint_runs_in_fp32_on_the_cpu(bench, bf16_student, tmp_path):
    lat = _latency(bench, bf16_student, tmp_path)
    a = lat["artifact"]
    assert (a["precision"], a["checkpoint_precision"], a["device"], a["label"]) == ("fp32", "bf16", "cpu",
                                                                                 "model torch fp32")
    assert lat["runs"][0]["extra"]["dtype"] == "float32" and lat["summary"]["decode_tok_s"]["median"] > 0
    on_disk = bandwidth.weight_bytes_per_token(bf16_student, "hf")["bytes"]
    assert lat["roofline"]["weight_bytes_per_token"] == 2 * on_disk  # bf16 file, fp32 in memory


def test_latency_and_accuracy_in_the_dtype_asked_for(bench, bf16_student, tmp_path):
    lat = _latency(bench, bf16_student, tmp_path, "--device", "cpu", "--dtype", "bf16")
    assert (lat["artifact"]["precision"], lat["config"]["dtype"]) == ("bf16", "bf16")
    assert lat["runs"][0]["extra"]["dtype"] == "bfloat16"
    assert lat["roofline"]["weight_bytes_per_token"] == bandwidth.weight_bytes_per_token(bf16_student, "hf")["bytes"]
    code, _, err = bench("accuracy", "--artifact", bf16_student, "--threads", "1", "--limit", "2", "--device", "cpu",
                         "--dtype", "bf16", "--json", tmp_path / "a.json")
    assert code == 0, err
    acc = json.loads((tmp_path / "a.json").read_text())
    assert acc["n"] == 2 and acc["artifact"]["label"] == "model torch bf16"


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_clear_line(bench, bf16_student):
    code, _, err = bench("latency", "--artifact", bf16_student, *FAST, "--device", "cuda")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --device cuda: torch ")
    assert "Traceback" not in err


@pytest.mark.gpu
def test_latency_on_cuda_in_the_checkpoint_dtype(bench, bf16_student, tmp_path):
    lat = _latency(bench, bf16_student, tmp_path, "--device", "cuda")
    a = lat["artifact"]
    assert (a["precision"], a["device"], a["label"]) == ("bf16", "cuda", "model torch bf16 cuda")
    assert lat["runs"][0]["extra"]["gpu_peak_mb"] > 0
    assert "host memory bandwidth" in lat["roofline"]["error"]  # a GPU is not bound by host DRAM
