"""`genrecal-export` end to end: targets, refusals, re-runs, the TensorRT plan and engine checks.

    python -m pytest tests/export/test_export_cli.py -q
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from safetensors.torch import load_file, save_file

from genrecal.cli import export_main
from genrecal.artifacts import layout
from genrecal.export import targets
from genrecal.export.tensorrt import check_engine_dir, jetpack_from_release
from genrecal.artifacts.manifest import MANIFEST_NAME, Manifest, load_manifest, write_manifest
from genrecal.runtimes.base import RuntimeError_

FAST = ["--formats", "onnx", "--precision", "fp32", "--no-check", "--threads", "1"]


def _export(student, out, *args) -> int:
    return export_main(["--student", str(student), "--out", str(out), *args])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def jetson_out(zoo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("jetson") / "out"
    assert _export(zoo_dir("smolvlm"), out, "--target", "jetson", "--threads", "1") == 0
    return out


def test_jetson_writes_fp16_onnx_and_a_plan_for_every_dynamic_input(jetson_out, capsys):
    fp16 = load_manifest(jetson_out / "onnx-fp16")
    assert (fp16.format, fp16.precision, fp16.target, fp16.parity["passed"]) == ("onnx", "fp16", "jetson", True)
    plan_dir = jetson_out / "tensorrt-plan"
    manifest = load_manifest(plan_dir)
    assert manifest.format == "tensorrt-plan" and manifest.parity["passed"]
    plan = json.loads((plan_dir / layout.PLAN_NAME).read_text())
    assert plan["builder"]["fp16"] and plan["decoder_profiles"] == {"prefill": 0, "decode": 1}
    for role, graph in plan["graphs"].items():
        model = onnx.load(str(plan_dir / graph["onnx"]))
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # TensorRT's parser takes these
        dynamic = {i.name for i in model.graph.input if any(d.dim_param for d in i.type.tensor_type.shape.dim)}
        assert dynamic, role
        for prof in graph["profiles"]:
            assert dynamic <= set(prof["shapes"]), (role, prof["name"])
            for s in prof["shapes"].values():
                assert all(lo <= mid <= hi for lo, mid, hi in zip(s["min"], s["opt"], s["max"]))
        line = plan["trtexec"][role]
        assert line.startswith(f"trtexec --onnx={graph['onnx']} --saveEngine={graph['engine']} --fp16")
        assert line.count("--minShapes=") == len(graph["profiles"])
    prefill, decode = (p["shapes"] for p in plan["graphs"]["decoder"]["profiles"])
    assert decode["inputs_embeds"]["max"][1] == 1 and prefill["past_key_values.0.key"]["max"][2] == 0
    assert decode["attention_mask"]["max"][1] == plan["limits"]["max_context"]
    # smolvlm's pixel_values are [1, images, 3, H, W] (the processor's rank, as transformers.js feeds them)
    assert plan["graphs"]["vision"]["profiles"][0]["shapes"]["pixel_values"]["max"][1] == plan["limits"]["max_images"]
    assert plan["memory"]["device"] == "jetson-orin-nano" and plan["memory"]["total_gib"] < plan["memory"]["budget_gib"]
    assert prefill["inputs_embeds"]["max"][1] == plan["limits"]["max_prompt"] >= plan["limits"]["image_tokens"]
    summary = json.loads((jetson_out / layout.SUMMARY_NAME).read_text())
    assert [a["dir"] for a in summary["artifacts"]] == ["onnx-fp16", "tensorrt-plan"]


def test_build_engine_without_tensorrt_is_one_line_exit_2(jetson_out, capsys):
    assert export_main(["build-engine", str(jetson_out / "tensorrt-plan")]) == 2
    assert "TensorRT is not installed" in _one_error_line(capsys)
    assert export_main(["check-engine", str(jetson_out / "tensorrt-plan")]) == 2
    _one_error_line(capsys)


def test_engines_built_elsewhere_are_refused(tmp_path):
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "decoder_model_merged.engine").write_bytes(b"serialized")
    write_manifest(engines, Manifest(format="tensorrt", target="jetson", family="smolvlm", precision="fp16",
                                     source_sha256="x", extra={"tensorrt_version": "10.3.0",
                                                               "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}))
    assert check_engine_dir(engines, "10.3.0", "Orin (nvgpu)", "8.7").format == "tensorrt"
    with pytest.raises(RuntimeError_, match="not portable across versions"):
        check_engine_dir(engines, "10.16.0", "Orin (nvgpu)", "8.7")
    with pytest.raises(RuntimeError_, match="built for Orin"):
        check_engine_dir(engines, "10.3.0", "NVIDIA H100", "9.0")


def test_jetpack_is_read_from_nv_tegra_release():
    line = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8"
    assert jetpack_from_release(line) == ("36.4.3", "6.1/6.2")
    assert jetpack_from_release("garbage") == (None, None)


def _with_training_state(student: str, dst: Path, as_file: bool = False) -> Path:
    shutil.copytree(student, dst)
    if as_file:
        save_file({"proj_pre.weight": torch.zeros(2, 2)}, str(dst / "recalibrator.safetensors"))
        return dst
    weights = load_file(str(dst / "model.safetensors"))
    weights["recal.blocks.0.proj_post.weight"] = torch.zeros(4, 4)
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("as_file", [False, True], ids=["tensors", "file"])
def test_training_state_is_refused_unless_stripped(zoo_dir, tmp_path, capsys, as_file):
    student = _with_training_state(zoo_dir("llava"), tmp_path / "student", as_file)
    assert _export(student, tmp_path / "out", "--target", "cpu", *FAST) == 2
    err = _one_error_line(capsys)
    assert "training-only" in err and "--strip" in err
    assert not (tmp_path / "out" / "hf").exists()
    assert _export(student, tmp_path / "out", "--target", "cpu", "--strip", *FAST) == 0
    hf = tmp_path / "out" / "hf"
    assert not [k for k in load_file(str(hf / "model.safetensors")) if "recal" in k or "proj_" in k]
    assert not list(hf.glob("recalibrator*"))
    stripped = load_manifest(hf).extra
    assert stripped["stripped_files"] if as_file else stripped["stripped_tensors"]


def test_pickle_only_and_run_dirs_are_refused(zoo_dir, tmp_path, capsys):
    pickled = tmp_path / "pickled"
    shutil.copytree(zoo_dir("llava"), pickled)
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert _export(pickled, tmp_path / "o1", "--target", "cpu", *FAST) == 2
    assert "pickle" in _one_error_line(capsys)
    run_dir = tmp_path / "run"
    shutil.copytree(zoo_dir("llava"), run_dir / "student")
    assert _export(run_dir, tmp_path / "o2", "--target", "cpu", *FAST) == 2
    assert "did you mean" in _one_error_line(capsys)


@pytest.mark.parametrize("family, args, message", [
    ("gemma3", ["--target", "cpu"], "supported student families: "),
    ("llava", ["--target", "cpu", "--precision", "q8_0"], "not available for onnx"),
    ("llava", ["--target", "cpu", "--formats", "tensorrt"], "selects no artifact"),
    ("llava", ["--target", "cpu", "--formats", "coreml"], "formats: onnx, gguf, tensorrt"),
], ids=["teacher-only", "bad-precision", "no-artifact", "bad-format"])
def test_unsupported_choices_are_one_line_errors(zoo_dir, tmp_path, capsys, family, args, message):
    student = zoo_dir(family)
    capsys.readouterr()  # a zoo build inside this test prints its own progress: not the CLI's output
    assert _export(student, tmp_path / "out", *args) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out" / "hf").exists()  # refused before any work


def test_missing_gguf_writer_is_a_clear_error(monkeypatch):
    real = targets.importlib.import_module

    def no_gguf(name):
        if name == "genrecal.export.gguf":
            raise ImportError("No module named 'genrecal.export.gguf'")
        return real(name)

    monkeypatch.setattr(targets.importlib, "import_module", no_gguf)
    with pytest.raises(targets.TargetError, match="GGUF export is not available in this install"):
        targets.check_support("smolvlm", targets.resolve("phone"))


def test_rerun_over_existing_out_is_safe(zoo_dir, tmp_path, capsys):
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    out = tmp_path / "out"
    assert _export(zoo_dir("qwen2_vl"), out, "--target", "cpu", *FAST) == 0
    (out / "notes.txt").write_text("mine")
    first = load_manifest(out / "onnx-fp32").created
    assert _export(zoo_dir("qwen2_vl"), out, "--target", "cpu", *FAST) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert load_manifest(out / "onnx-fp32").files and OnnxRuntime(out / "onnx-fp32").family == "qwen2_vl"
    assert first <= load_manifest(out / "onnx-fp32").created
    assert sorted(p.name for p in out.iterdir()) == ["export_summary.json", "hf", "notes.txt", "onnx-fp32"]
    shutil.rmtree(out / "onnx-fp32")
    (out / "onnx-fp32").mkdir()
    (out / "onnx-fp32" / "precious.onnx").write_text("not ours")
    capsys.readouterr()
    assert _export(zoo_dir("qwen2_vl"), out, "--target", "cpu", *FAST) == 2
    assert "not a genrecal artifact" in _one_error_line(capsys)
    assert (out / "onnx-fp32" / "precious.onnx").read_text() == "not ours"
    assert not (out / "onnx-fp32" / MANIFEST_NAME).exists()


def test_targets_resolve_declaratively():
    dirs = lambda arts: [a.dirname for a in arts]  # noqa: E731
    assert dirs(targets.resolve("cpu")) == ["onnx-fp32", "onnx-int8w", "onnx-int4"]
    assert dirs(targets.resolve("phone")) == ["gguf-q4_k_m", "gguf-q8_0", "onnx-int8w"]
    # jetson: Edge-LLM or genrecal's own path, chosen per family by export/edgellm/routing.py
    assert dirs(targets.resolve("jetson")) == ["edgellm-fp16", "onnx-fp16", "tensorrt-plan"]
    everything = dirs(targets.resolve("all"))
    assert len(everything) == len(set(everything)) == 8
    assert dirs(targets.resolve("all", ("onnx",), ("fp32", "int8"))) == ["onnx-fp32", "onnx-int8"]
    assert dirs(targets.resolve("jetson", None, ("fp16",))) == ["edgellm-fp16", "onnx-fp16", "tensorrt-plan"]


class _FakeTensorRT:
    """A stand-in for the `tensorrt` module with the calls build_engines makes: it checks our
    plumbing (plan -> profiles -> files -> manifest), not TensorRT itself (absent here)."""

    __version__ = "10.3.0"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16 = "fp16"

    def __init__(self):
        self.profiles: list[dict] = []
        self.flags: list = []
        trt = self

        class Profile(dict):
            def set_shape(self, name, lo, mid, hi):
                self[name] = (lo, mid, hi)

        class Config:
            def set_memory_pool_limit(self, pool, size):
                trt.pool = (pool, size)

            def set_flag(self, flag):
                trt.flags.append(flag)

            def add_optimization_profile(self, profile):
                trt.profiles.append(profile)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"engine"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                return Path(path).is_file()

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_build_engine_plumbing_with_a_fake_tensorrt(jetson_out, tmp_path, monkeypatch, capsys):
    import sys

    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    out = tmp_path / "engines"
    assert export_main(["build-engine", str(jetson_out / "tensorrt-plan"), "--out", str(out)]) == 0
    plan = json.loads((jetson_out / "tensorrt-plan" / layout.PLAN_NAME).read_text())
    assert len(fake.profiles) == sum(len(g["profiles"]) for g in plan["graphs"].values()) == 4
    assert fake.flags.count("fp16") == 3 and fake.pool == ("workspace", 2048 << 20)
    manifest = load_manifest(out)
    assert (manifest.format, manifest.family, manifest.precision) == ("tensorrt", "smolvlm", "fp16")
    assert manifest.extra["tensorrt_version"] == "10.3.0" and manifest.extra["decoder_profiles"]["decode"] == 1
    assert sorted(p.name for p in out.glob("*.engine")) == sorted(layout.ENGINE_NAMES.values())
    assert (out / "tokenizer.json").is_file() and not list(out.glob("*.onnx"))
    assert "engines:" in capsys.readouterr().out
    with pytest.raises(RuntimeError_, match="not portable"):
        check_engine_dir(out, "10.16.0", manifest.extra["gpu"])
