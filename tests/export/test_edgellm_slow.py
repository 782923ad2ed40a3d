"""`genrecal-export --target jetson` end to end: Edge-LLM's environment (made from the package index once,
then cached), its exporter on bf16 zoo qwen2_5_vl and internvl, host checks, references, bundles; LLaVA's
one-line fallback to genrecal's own TensorRT path.

    python -m pytest tests/export/test_edgellm_slow.py -q -m slow      # ~1 min per family, + ~1 min for the env

Needs pip access to PyPI the first time (tensorrt-edgellm 0.11.0 and its pins, ~1 GB) unless
$GENRECAL_EDGELLM_PYTHON or the cache ($GENRECAL_CACHE or ~/.cache/genrecal) already holds the environment.
"""
from __future__ import annotations

import json

import pytest
import torch

from genrecal.artifacts import edgellm as layout
from genrecal.artifacts.manifest import load_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def edgellm_python():
    from genrecal.export.edgellm.env import EdgeLLMError, edgellm_python

    try:
        return edgellm_python()
    except EdgeLLMError as exc:
        pytest.skip(f"Edge-LLM's environment cannot be made here: {exc}")


def _export(tmp_path, family: str, size: str, lines: list):
    from genrecal.export.run import ExportOptions, export
    from genrecal.zoo import build_to_dir

    student = build_to_dir(family, tmp_path / family, size=size, dtype=torch.bfloat16)
    return export(ExportOptions(student=student, out=tmp_path / "out", target="jetson"), log=lines.append)


@pytest.mark.parametrize("family, size", [("qwen2_5_vl", "tiny-v4"), ("internvl", "tiny-v4"),
                                          ("qwen3_vl", "tiny-deepstack"), ("qwen3_5", "tiny")])
def test_jetson_target_writes_the_edgellm_artifact(tmp_path, edgellm_python, family, size):
    lines: list[str] = []
    summary = _export(tmp_path, family, size, lines)
    assert [r["dir"] for r in summary["artifacts"]] == ["edgellm-fp16"], summary
    assert summary["artifacts"][0]["status"] == "ok", summary["artifacts"][0]
    art = tmp_path / "out" / "edgellm-fp16"
    manifest = load_manifest(art)  # every checksum verified
    assert manifest.format == "edgellm" and manifest.family == family and manifest.precision == "fp16"
    extra = manifest.extra
    assert extra["edgellm_version"] == layout.VERSION == extra["edgellm_env"]["packages"]["tensorrt-edgellm"]
    assert extra["edgellm_env"]["packages"]["transformers"] == "5.14.1"
    assert f"-m {layout.EXPORT_MODULE}" in extra["commands"]["export"] and "--dtype float16" in extra["commands"]["export"]
    assert extra["staging"]["cast_from"] == ["bfloat16"]
    assert set(extra["device"]["commands"]) == {"llm_build", "visual_build", "llm_inference"}
    for rel in ("llm/model.onnx", "llm/embedding.safetensors", "llm/chat_template.jinja", "visual/model.onnx",
                "visual/preprocessor_config.json", "parity/reference.json", "parity/input.json"):
        assert rel in manifest.files, rel
    checks = json.loads((art / layout.HOST_CHECKS).read_text())
    assert {c["name"] for c in checks if c["passed"]} == {c["name"] for c in checks} and len(checks) == 8
    ref = json.loads((art / "parity" / "reference.json").read_text())
    requests = json.loads((art / "parity" / "input.json").read_text())["requests"]
    assert len(ref["prompts"]) == len(requests) >= 2 and requests[0]["messages"][0]["content"][0]["type"] == "image"
    assert all(len(p["tokens"]) == len(p["top_k"]) > 0 for p in ref["prompts"])
    assert all((art / p["image"]).is_file() for p in ref["prompts"])


def test_bundles_for_three_jetsons(tmp_path, edgellm_python):
    from genrecal.benchmarks.bundle import make_bundle

    _export(tmp_path, "qwen2_5_vl", "tiny-v4", [])
    for profile in ("jetson-orin-nano", "jetson-agx-orin", "jetson-agx-thor"):
        bundle = make_bundle(tmp_path / "out" / "edgellm-fp16", profile, tmp_path / profile)
        meta = json.loads((bundle / "bundle.json").read_text())
        assert meta["device_plan"]["limits"]["max_image_tokens_per_image"] >= 1
        assert "llm_build" in (bundle / "run.sh").read_text()


def test_llava_gets_one_line_and_genrecals_own_path(tmp_path):
    lines: list[str] = []
    summary = _export(tmp_path, "llava", "tiny", lines)
    assert [r["dir"] for r in summary["artifacts"]] == ["onnx-fp16", "tensorrt-plan"]
    said = [ln for ln in lines if "Edge-LLM" in ln]
    assert len(said) == 1 and "genrecal's own TensorRT path" in said[0]
    assert not (tmp_path / "out" / "edgellm-fp16").exists()
