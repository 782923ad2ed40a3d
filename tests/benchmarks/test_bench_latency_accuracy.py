"""genrecal-bench latency / accuracy: every field recorded, sane statistics, clear errors.

    python -m pytest tests/benchmarks -q -m "not slow"
"""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from genrecal.benchmarks import bandwidth
from genrecal.benchmarks.accuracy import load_questions
from genrecal.benchmarks.latency import PHASES
from genrecal.artifacts.profiles import PROFILES, UnknownProfileError, get_profile
from genrecal.artifacts.manifest import Manifest, write_manifest
from genrecal.runtimes.base import Timing


def test_phases_cover_every_timing_field():
    assert set(PHASES) == {f.name for f in dataclasses.fields(Timing)} - {"extra"}


def test_latency_json_has_every_field(results):
    r = results["latency"]
    assert r["kind"] == "latency" and r["schema"] == 1 and len(r["runs"]) == 3
    assert {"path", "format", "precision", "family", "runtime", "role", "label"} <= set(r["artifact"])
    assert r["artifact"]["format"] == "hf" and r["artifact"]["runtime"] == "torch"
    for phase in PHASES:
        stats = r["summary"][phase]
        assert stats["min"] <= stats["median"] <= stats["p90"] <= stats["max"], phase
    assert r["summary"]["decode_tok_s"]["median"] > 0 and r["summary"]["vision_encode_ms"]["median"] > 0
    for key in ("cpu_model", "cores_logical", "cores_usable", "threads_used", "ram_gb", "os"):
        assert r["device"][key] not in (None, ""), key
    assert r["device"]["threads_used"] == 1 and r["config"]["threads"] == 1
    roof = r["roofline"]
    assert roof["weight_bytes_per_token"] > 0 and roof["measured"]["bandwidth_gbs"] > 0
    assert roof["bound_tok_s"] > 0 and 0 < roof["pct_of_bound"]
    assert "energy" in r and r["peak_rss_mb"] > 0 and r["genrecal"]["version"]


def test_accuracy_on_a_tiny_slice(results):
    r = results["accuracy"]
    assert r["kind"] == "accuracy" and r["n"] == 4 and len(r["examples"]) == 4
    assert 0.0 <= r["exact_match"] <= 1.0 and r["vqa_soft_accuracy"] == r["exact_match"]  # one reference each
    assert r["summary"]["decode_tok_s"]["median"] > 0
    assert all(e["answers"] and "prediction" in e for e in r["examples"])


def test_accuracy_reads_a_llava_file_with_extra_references(tmp_path):
    from genrecal.data import write_easy_vqa

    data = write_easy_vqa(tmp_path / "evqa", split="test", limit=3)
    records = json.loads((data / "data.json").read_text())
    records[0]["answers"] = ["red", "red", "blue"]
    (data / "data.json").write_text(json.dumps(records))
    questions = load_questions(str(data), limit=2)
    assert len(questions) == 2 and "<image>" not in questions[0].question
    assert questions[0].answers == [records[0]["conversations"][1]["value"], "red", "red", "blue"]
    assert len(load_questions("easy-vqa", limit=5)) == 5


def test_bench_cli_latency_writes_json(bench, student, tmp_path):
    code, out, _ = bench("latency", "--artifact", student, "--threads", "1", "--warmup", "0", "--runs", "2",
                         "--max-new-tokens", "3", "--no-bandwidth", "--json", tmp_path / "l.json")
    assert code == 0 and "decode_tok_s" in out and "ttft_ms" in out
    r = json.loads((tmp_path / "l.json").read_text())
    assert len(r["runs"]) == 2 and "measured" not in r["roofline"] and r["roofline"]["weight_bytes_per_token"] > 0


def test_profiles():
    assert {"host", "jetson-orin-nano", "jetson-agx-orin", "phone-class"} <= set(PROFILES)
    phone = get_profile("phone-class")
    assert phone.runtime == "llamacpp" and phone.threads == 4 and phone.bandwidth_gbs > 0
    assert get_profile("jetson-orin-nano").runtime == "tensorrt"
    with pytest.raises(UnknownProfileError, match="unknown profile 'iphone'; known: host"):
        get_profile("iphone")


def test_weight_bytes_match_the_decoder_parameters(student):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(student)
    text = model.model.text_model
    expected = sum(p.numel() * p.element_size() for n, p in text.named_parameters() if "embed_tokens" not in n)
    expected += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    assert bandwidth.weight_bytes_per_token(student, "hf")["bytes"] == expected


def _lookup_then_matmul(path, dtype) -> None:
    """ids [1, L] -> Gather(table [100, 10]) -> MatMul(W [10, 25]) -> y [1, L, 25], weights of `dtype`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((100, 10), dtype), "table")
    weight = numpy_helper.from_array(np.ones((10, 25), dtype), "w")
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])],
        "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "L"])],
        [helper.make_tensor_value_info("y", elem, [1, "L", 25])], [table, weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_weight_bytes_of_onnx_and_roofline(tmp_path):
    """ONNX weights are counted in the graph onnxruntime runs: the lookup table (one row per token) is
    left out, the vision graph too."""
    _lookup_then_matmul(tmp_path / "decoder_model_merged.onnx", np.float32)
    (tmp_path / "vision_encoder.onnx").write_bytes(b"x" * 5000)
    assert bandwidth.weight_bytes_per_token(tmp_path, "onnx")["bytes"] == 10 * 25 * 4
    roof = bandwidth.roofline(decode_tok_s=50.0, bandwidth_gbs=1e-4, bytes_per_token=1000)  # bound 100 tok/s
    assert roof == {"bound_tok_s": 100.0, "pct_of_bound": 50.0}


@pytest.mark.parametrize("argv, message", [
    (["latency", "--artifact", "{student}", "--profile", "iphone"], "unknown profile 'iphone'"),
    (["latency", "--artifact", "{tmp}/missing"], "artifact not found"),
    (["accuracy", "--artifact", "{tampered}", "--limit", "1"], "checksum mismatch"),
    (["latency", "--artifact", "{student}", "--image", "{tmp}/tiny.png", "--runs", "1"], "too small to encode"),
    (["latency", "--artifact", "{student}", "--image", "{tmp}/text.png", "--runs", "1"], "not a readable image"),
    (["accuracy", "--artifact", "{student}", "--data", "{tmp}/none.json"], "data file not found"),
    (["latency", "--artifact", "{student}", "--runs", "0"], "--runs must be >= 1"),
])
def test_bad_input_is_one_clear_line(bench, student, tmp_path, argv, message):
    from PIL import Image

    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    (tmp_path / "text.png").write_text("not an image")
    tampered = tmp_path / "tampered"
    if "{tampered}" in argv:
        shutil.copytree(student, tampered)
        write_manifest(tampered, Manifest(format="hf", target="hf", family="smolvlm", precision="fp32",
                                          source_sha256="0"))
        (tampered / "config.json").write_text((tampered / "config.json").read_text() + " ")
    args = [a.format(student=student, tmp=tmp_path, tampered=tampered) for a in argv]
    code, _, err = bench(*args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize("fmt, runtime, precision", [("onnx", "onnxruntime", "int8"), ("gguf", "llamacpp", "q4_k_m")])
def test_latency_and_accuracy_of_quantised_artifacts(bench, quantised, tmp_path, fmt, runtime, precision):
    """The benchmarks measure the exported artifact through its own runtime, not the PyTorch model."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny rows: K-quants fall back, which the exporter warns about
        artifact = quantised(fmt)
    code, out, err = bench("latency", "--artifact", artifact, "--threads", "1", "--warmup", "0", "--runs", "2",
                           "--max-new-tokens", "4", "--no-bandwidth", "--json", tmp_path / "l.json")
    assert code == 0, err
    lat = json.loads((tmp_path / "l.json").read_text())
    assert (lat["artifact"]["format"], lat["artifact"]["runtime"], lat["artifact"]["precision"]) == (
        fmt, runtime, precision)
    assert lat["summary"]["decode_tok_s"]["median"] > 0 and lat["roofline"]["weight_bytes_per_token"] > 0
    if runtime == "llamacpp":  # the figure says which llama.cpp kernels produced it
        kernels = lat["device"]["llama_cpp"]
        assert "AVX2" in kernels["cpu_features"] and kernels["system_info"].startswith("CPU :")
        from genrecal.benchmarks.report import write_report

        report = write_report([tmp_path / "l.json"], tmp_path / "report").read_text()
        assert f"CPU kernels {', '.join(kernels['cpu_features'])}" in report
    code, out, err = bench("accuracy", "--artifact", artifact, "--threads", "1", "--limit", "3",
                           "--json", tmp_path / "a.json")
    assert code == 0, err
    acc = json.loads((tmp_path / "a.json").read_text())
    assert acc["n"] == 3 and acc["artifact"]["label"] == f"student {runtime} {precision}"


def test_profile_threads_are_capped_at_the_usable_cores(monkeypatch):
    import os

    from genrecal.benchmarks.latency import pick_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    warnings: list[str] = []
    assert pick_threads(get_profile("phone-class"), None, warnings) == 2
    assert "uses 4 threads; this machine has 2 usable cores" in warnings[0]
    assert pick_threads(get_profile("phone-class"), 3, []) == 3  # an explicit --threads is obeyed
    assert pick_threads(get_profile("host"), None, []) is None  # host: the runtime's default (all cores)


def test_a_llama_cpp_crash_is_one_clear_line(bench, quantised, tmp_path, monkeypatch):
    """A native crash in the backend (here a real SIGSEGV in the smoke child) ends the bench with one line."""
    import sys
    import warnings

    from genrecal.runtimes import llamacpp_smoke

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        artifact = quantised("gguf")
    monkeypatch.setattr(llamacpp_smoke, "_checked", {})
    monkeypatch.setattr(llamacpp_smoke, "child_argv",
                        lambda request: [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"])
    code, out, err = bench("latency", "--artifact", artifact, "--threads", "1", "--runs", "1", "--no-bandwidth")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: llama.cpp backend (llama-cpp-python 0.3.36) crashed with SIGSEGV") and \
        "model.gguf" in err and 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in err, err
