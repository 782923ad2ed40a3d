"""Edge-LLM device side on this machine: build commands sized per Jetson profile, parity against recorded
outputs, llm_inference profile parsers on recorded outputs, and the bundle's run.sh end to end with fake tools.

    python -m pytest tests/export/test_edgellm_device.py -q

The recorded outputs (data/edgellm/) are in Edge-LLM 0.11's documented formats, written by hand: no Jetson
or GPU ran here (see data/edgellm/README.md).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import edgellm_fakes as fakes
from genrecal.artifacts import edgellm as layout
from genrecal.export.edgellm import parity, timing
from genrecal.export.edgellm.device import DeviceFitError, plan_for

DATA = Path(__file__).parent / "data" / "edgellm"
# a Qwen3-VL-2B-sized model as NVIDIA ships it for Orin (INT4-AWQ LLM + fp16 ViT, ~1.6 GB of weights; 28 layers,
# 8 KV heads x 128) whose processor allows 16384 tokens per image (Qwen's default max_pixels); fp16 (~4.4 GB)
# would not fit Orin Nano's 60 % budget with any image
TWO_B = {"layers": 28, "hidden": 2048, "heads": 16, "kv_heads": 8, "head_dim": 128, "ffn": 6144, "vocab": 151936,
         "max_positions": 32768, "v_hidden": 1024, "v_ffn": 4096, "merge": 2, "weights_bytes": int(1.6e9),
         "image_tokens": {"min": 4, "max": 16384}, "parity_tokens": 24}


# ---- plan sizing ----
def test_plan_sized_from_the_profile():
    nano, agx, thor = (plan_for(TWO_B, p) for p in ("jetson-orin-nano", "jetson-agx-orin", "jetson-agx-thor"))
    small, big = nano["limits"], agx["limits"]
    assert small["max_image_tokens_per_image"] < big["max_image_tokens_per_image"] == 16384  # Nano: images downsized
    assert small["max_kv_cache_capacity"] < big["max_kv_cache_capacity"] <= TWO_B["max_positions"]
    assert nano["memory"]["total_gib"] <= nano["memory"]["budget_gib"]
    assert thor["limits"]["max_image_tokens_per_image"] == 16384
    assert big["max_image_tokens"] == big["max_images"] * 16384
    assert big["max_input_len"] == big["max_images"] * 16384 + 256 < big["max_kv_cache_capacity"]
    assert nano["warnings"] and "RAM" in nano["warnings"][0]  # llm_build needs ~4x the model in RAM
    cmd = agx["commands"]
    assert f"--maxInputLen {big['max_input_len']} --maxKVCacheCapacity {big['max_kv_cache_capacity']}" in cmd["llm_build"]
    assert "--maxImageTokensPerImage 16384" in cmd["visual_build"] and "--onnxDir visual" in cmd["visual_build"]
    assert "--multimodalEngineDir engines/visual" in cmd["llm_inference"]
    assert "--profileOutputFile results/profile.json" in cmd["llm_inference"]


def test_plan_refuses_a_model_that_cannot_fit():
    with pytest.raises(DeviceFitError, match="cannot fit jetson-orin-nano"):
        plan_for({**TWO_B, "weights_bytes": int(16e9)}, "jetson-orin-nano")


# ---- parity on recorded outputs ----
def _compare(**kw):
    return parity.compare(fakes.reference_json(), fakes.output_json(**kw))


def test_parity_passes_on_equal_tokens():
    r = _compare()
    assert r["passed"] and r["counts"]["match"] == 2


def test_parity_near_tie_is_not_a_failure():
    r = _compare(tokens=[[7, 28, 9, 10, 1], [11, 12, 13, 1]])  # 28 = the reference's #2 at 0.02 below #1
    assert r["passed"] and r["counts"]["near-tie"] == 1
    assert r["prompts"][0]["first_diff"] == 1 and r["prompts"][0]["margin"] == pytest.approx(0.02)


def test_parity_fails_loudly_on_a_real_mismatch():
    r = _compare(tokens=[[7, 8, 99, 10, 1], [11, 12, 13, 1]])  # 99: not in the reference's top-3
    assert not r["passed"] and r["counts"]["mismatch"] == 1
    text = parity.format_parity(r)
    assert "PARITY FAILED" in text and "!!!!" in text and "step 2" in text


def test_parity_failed_request_and_text_only():
    out = fakes.output_json(texts=["text 0", "TensorRT Edge LLM cannot handle this request. Fails."])
    r = parity.compare(fakes.reference_json(), out)
    assert not r["passed"] and r["counts"]["failed"] == 1
    r = _compare(with_ids=False)  # a build without output_ids: texts compared
    assert r["passed"] and {p["compared"] for p in r["prompts"]} == {"text"}
    r = _compare(with_ids=False, texts=["text 0", "other"])
    assert not r["passed"]


# ---- timing parsers on recorded outputs ----
def test_profile_json_to_latency_summary():
    s = timing.summary_from_profile(json.loads((DATA / "profile_orin_nano.json").read_text()))
    assert s["vision_encode_ms"]["median"] == pytest.approx(141.2) and s["vision_encode_ms"]["p90"] == pytest.approx(143.0)
    assert s["prefill_ms"]["median"] == pytest.approx(167.0)
    assert s["ttft_ms"]["median"] == pytest.approx(141.2 + 167.0)
    assert s["decode_tok_s"]["median"] == pytest.approx(36.1) and s["decode_ms_per_token"]["median"] == pytest.approx(27.7008)
    assert s["tokens_in"]["median"] == 292 and s["tokens_out"]["median"] == 128
    assert s["peak_rss_mb"]["median"] == 4500.0
    assert set(s) >= {"load_ms", "preprocess_ms", "prefill_tok_s", "e2e_ms"}


def test_console_summary_parses_like_the_json():
    console = timing.parse_console((DATA / "console_orin_nano.log").read_text())
    assert console["prefill"]["tokens_per_second"] == pytest.approx(1746.4)
    assert console["generation"]["average_time_per_token_ms"] == pytest.approx(27.7008)
    assert console["peak_gpu_memory_mb"] == 4500.0
    s = timing.summary_from_profile(console)
    assert s["vision_encode_ms"]["median"] == pytest.approx(141.3)  # stage average (the console has no median)
    assert s["prefill_ms"]["median"] == pytest.approx(167.2) and s["decode_tok_s"]["median"] == pytest.approx(36.1)


def test_profile_without_prefill_is_refused():
    with pytest.raises(timing.ProfileError, match="--dumpProfile"):
        timing.summary_from_profile({"stages": []})


# ---- the bundle, run with fake Edge-LLM tools ----
@pytest.fixture()
def edge_artifact(tmp_path):
    return fakes.artifact(tmp_path / "edgellm-fp16", fakes.student(tmp_path / "hf"))


def _run(bundle: Path, build: Path, *args) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "EDGELLM_BUILD": str(build), "HOME": str(bundle)}
    import sys

    env["PYTHON"] = sys.executable  # the device has python3 + numpy; here: this interpreter
    return subprocess.run(["./run.sh", *args], cwd=bundle, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("profile", ["jetson-orin-nano", "jetson-agx-thor"])
def test_bundle_runs_end_to_end_with_fake_tools(edge_artifact, tmp_path, profile):
    from genrecal.benchmarks.bundle import make_bundle
    from genrecal.benchmarks.results import load_results

    bundle = make_bundle(edge_artifact, profile, tmp_path / "bundle")
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["runtime"] == "edgellm" and meta["profile"] == profile
    # the device side only: Edge-LLM's tools run the model, so no runtime backend, exporter or trainer ships
    assert not (bundle / "genrecal" / "distill").exists() and not (bundle / "genrecal" / "export" / "onnx").exists()
    assert not (bundle / "genrecal" / "export" / "edgellm" / "env.py").exists()
    build = fakes.fake_tools(tmp_path / "build", fakes.output_json(), json.loads((DATA / "profile_orin_nano.json").read_text()))
    done = _run(bundle, build)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "parity passed" in done.stdout
    calls = (build / "calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["llm_build", "visual_build", "llm_inference"]
    assert f"--maxInputLen {meta['device_plan']['limits']['max_input_len']}" in calls[0]
    results = load_results([bundle / "results"])
    assert len(results) == 1 and results[0]["artifact"]["runtime"] == "edgellm"
    assert results[0]["config"]["limits"] == meta["device_plan"]["limits"]


def test_bundle_parity_failure_stops_the_run(edge_artifact, tmp_path):
    from genrecal.benchmarks.bundle import make_bundle

    bundle = make_bundle(edge_artifact, "jetson-agx-orin", tmp_path / "bundle")
    bad = fakes.output_json(tokens=[[7, 99, 9, 10, 1], [11, 12, 13, 1]])
    build = fakes.fake_tools(tmp_path / "build", bad, json.loads((DATA / "profile_orin_nano.json").read_text()))
    done = _run(bundle, build)
    assert done.returncode == 1 and "PARITY FAILED" in done.stdout
    assert not list((bundle / "results").glob("latency-*.json"))  # record never ran


def test_bundle_refuses_what_the_device_cannot_run(edge_artifact, tmp_path):
    from genrecal.benchmarks.edgellm_bundle import make_edgellm_bundle
    from genrecal.errors import GenrecalError

    with pytest.raises(GenrecalError, match="runs on a Jetson"):
        make_edgellm_bundle(edge_artifact, "phone-class", tmp_path / "b")


def test_report_merges_an_edgellm_record(edge_artifact, tmp_path):
    from genrecal.benchmarks.report import write_report

    (edge_artifact / layout.RESULTS_DIR).mkdir()
    (edge_artifact / layout.PROFILE_JSON).write_text((DATA / "profile_orin_nano.json").read_text())
    path = timing.write_record(edge_artifact, "jetson-orin-nano", tmp_path / "res" / "latency-nano.json")
    md = write_report([path.parent], tmp_path / "report").read_text()
    assert "student edgellm fp16" in md and "36.1" in md
