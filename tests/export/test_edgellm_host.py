"""Edge-LLM host side without network or Edge-LLM: environment lookup, staging, host checks, routing,
quantisation refusals, the manifest of a synthetic artifact.

    python -m pytest tests/export/test_edgellm_host.py -q
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import edgellm_fakes as fakes
from genrecal.artifacts import edgellm as layout
from genrecal.export.edgellm import checks, env
from genrecal.export.edgellm.export import check_family, require_outputs, stage_fp16
from genrecal.export.edgellm.quantize import NO_GPU, require_quantizable
from genrecal.export.edgellm.routing import route
from genrecal.export.targets import Artifact, TargetError, resolve


# ---- environment ----
def test_env_not_made_without_permission(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRECAL_CACHE", str(tmp_path))
    monkeypatch.delenv("GENRECAL_EDGELLM_PYTHON", raising=False)
    with pytest.raises(env.EdgeLLMError, match="not in"):
        env.edgellm_python(create_if_missing=False)


def test_env_override_must_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRECAL_EDGELLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(env.EdgeLLMError, match="not a file"):
        env.edgellm_python()


def test_env_cached_when_marker_matches(tmp_path, monkeypatch):
    """A venv whose marker lists today's requirements is reused; another marker means remake (not here)."""
    monkeypatch.setenv("GENRECAL_CACHE", str(tmp_path))
    monkeypatch.delenv("GENRECAL_EDGELLM_PYTHON", raising=False)
    venv = env.env_dir()
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / env.MARKER).write_text(json.dumps({"requirements": env.requirements(), "edgellm_version": "0.11.0",
                                               "freeze": ["torch==2.13.0+cpu", "transformers==5.14.1"]}))
    python = env.edgellm_python(create_if_missing=False)
    assert python == venv / "bin" / "python"
    assert env.env_facts(python)["packages"] == {"torch": "2.13.0+cpu", "transformers": "5.14.1"}
    assert "tensorrt-edgellm[export]==0.11.0" in env.requirements()
    assert any(r.startswith("nvidia-modelopt") for r in env.requirements())  # the visual step needs it


def test_last_error_names_the_reason():
    log = "INFO loading\nTraceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'datasets'\n"
    assert env.last_error(log) == "ModuleNotFoundError: No module named 'datasets'"


# ---- staging: fp16 + chat template ----
def test_stage_casts_to_fp16_and_writes_template(tmp_path):
    hf = fakes.student(tmp_path / "hf")
    (hf / layout.CHAT_TEMPLATE).unlink()  # template only in tokenizer_config: must land in chat_template.jinja
    (hf / "tokenizer_config.json").write_text(json.dumps({"chat_template": fakes.TEMPLATE}))
    done = stage_fp16(hf, tmp_path / "stage")
    tensors = load_file(str(tmp_path / "stage" / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert done["cast_from"] == ["bfloat16", "float32"] and done["chat_template"] == "config entry"
    assert (tmp_path / "stage" / layout.CHAT_TEMPLATE).read_text() == fakes.TEMPLATE
    assert json.loads((tmp_path / "stage" / "config.json").read_text())["dtype"] == "float16"


def test_stage_refuses_without_template(tmp_path):
    hf = fakes.student(tmp_path / "hf", template=False)
    with pytest.raises(env.EdgeLLMError, match="no chat template"):
        stage_fp16(hf, tmp_path / "stage")


# ---- families ----
@pytest.mark.parametrize("family", ["llava", "smolvlm", "idefics3", "qwen2_vl"])
def test_families_without_edgellm_vision_get_one_line(family):
    with pytest.raises(env.EdgeLLMError) as err:
        check_family(family)
    line = str(err.value)
    assert "\n" not in line and "genrecal's own TensorRT path" in line and "not an Edge-LLM artifact" in line


def test_text_only_output_is_refused(tmp_path):
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "model.onnx").write_bytes(b"")
    with pytest.raises(env.EdgeLLMError, match="no visual/model.onnx"):
        require_outputs(tmp_path, "qwen2_5_vl")


def test_route_jetson(capsys):
    arts = resolve("jetson")
    assert Artifact("edgellm", "fp16") in arts
    assert route("jetson", None, "qwen2_5_vl", arts) == [Artifact("edgellm", "fp16")]
    lines = []
    fallback = route("jetson", None, "llava", arts, log=lines.append)
    assert fallback == [Artifact("onnx", "fp16"), Artifact("tensorrt", "plan")]
    assert len(lines) == 1 and "genrecal's own TensorRT path" in lines[0]
    with pytest.raises(TargetError, match="onnx,tensorrt"):
        route("jetson", ("edgellm",), "smolvlm", [Artifact("edgellm", "fp16")])


def test_quantised_edgellm_without_gpu_is_one_line(monkeypatch):
    import genrecal.export.edgellm.quantize as q

    monkeypatch.setattr(q, "cuda_visible", lambda: False)
    arts = resolve("jetson", precisions=("int4_awq",))
    assert Artifact("edgellm", "int4_awq") in arts
    with pytest.raises(TargetError) as err:
        route("jetson", None, "qwen2_5_vl", arts)
    assert str(err.value) == NO_GPU.format(precision="int4_awq")


def test_quantize_refusals(tmp_path):
    hf = fakes.student(tmp_path / "hf")
    assert require_quantizable(hf, "fp16") is None
    with pytest.raises(env.EdgeLLMError, match="CUDA GPU"):
        require_quantizable(hf, "fp8", cuda=False)
    with pytest.raises(env.EdgeLLMError, match="group 128 does not divide"):
        require_quantizable(hf, "int4_awq", cuda=True)
    wide = fakes.student(tmp_path / "wide", hidden=128, ffn=256)
    with pytest.raises(env.EdgeLLMError, match="local JSONL"):  # no calibration file: never a download
        require_quantizable(wide, "int4_awq", cuda=True)
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "a red circle"}\n')
    assert require_quantizable(wide, "int4_awq", calib, cuda=True) == calib


# ---- host checks ----
@pytest.fixture()
def synthetic(tmp_path):
    hf = fakes.student(tmp_path / "hf")
    return fakes.artifact(tmp_path / "edgellm-fp16", hf), hf


def _by_name(results):
    return {r["name"]: r for r in results}


def test_host_checks_pass_on_a_faithful_artifact(synthetic):
    art, hf = synthetic
    results = _by_name(checks.run_all(art, hf, fakes.facts()))
    assert all(r["passed"] for r in results.values()), [r for r in results.values() if not r["passed"]]
    assert "int4_awq would be refused" in results["int4_group"]["detail"]  # hidden 64: reported, fp16 unaffected
    assert results["embedding"]["max_abs_diff"] == 0.0


def test_host_checks_catch_each_defect(synthetic):
    art, hf = synthetic
    emb = art / "llm" / layout.EMBEDDING_NAME
    table = load_file(str(emb))[layout.EMBEDDING_TENSOR]
    table[3, 0] += 1
    save_file({layout.EMBEDDING_TENSOR: table}, str(emb))
    pre = art / "visual" / layout.PREPROCESSOR_CONFIG
    pre.write_text(json.dumps({**json.loads(pre.read_text()), "image_mean": [0.5, 0.5, 0.5]}))
    cfg = art / "llm" / layout.CONFIG_NAME
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "image_token_id": 9}))
    (art / "llm" / layout.CHAT_TEMPLATE).write_text("other")
    fakes._graph(art / "llm" / layout.ONNX_NAME, ["inputs_embeds"], ["logits"])
    results = _by_name(checks.run_all(art, hf, fakes.facts(), precision="int4_awq"))
    failed = {n for n, r in results.items() if not r["passed"]}
    assert failed == {"embedding", "preprocessor", "llm_config", "chat_template", "graph_io", "int4_group"}
    assert "image_mean" in results["preprocessor"]["detail"] and "image_token_id" in results["llm_config"]["detail"]
    assert "kv_page_table" in results["graph_io"]["detail"] and "past_key_values*" in results["graph_io"]["detail"]


def test_runtime_resize_matches_transformers_smart_resize():
    """Edge-LLM's runtime resize (token limits) == transformers' smart_resize (pixel limits) over many sizes."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    for h, w in [(64, 64), (100, 50), (16, 16), (33, 97), (250, 40), (48, 80), (17, 200)]:
        for lo, hi in [(4, 16), (1, 64), (16, 256)]:
            want = smart_resize(h, w, 16, lo * 256, hi * 256)
            assert checks.qwen_smart_resize(h, w, 16, lo, hi) == tuple(want), (h, w, lo, hi)


def test_image_token_check_flags_a_grid_the_runtime_would_not_make():
    f = fakes.facts()
    f["parity_images"][1]["resized_hw"] = [48, 48]
    r = checks.check_image_tokens(f)
    assert not r["passed"] and "p1.png" in r["detail"]
    internvl = {"family": "internvl", "tokens_per_tile": 16, "image_tokens": {"min": 16, "max": 16},
                "parity_images": [{"name": "p0.png", "tiles": 1}]}
    assert checks.check_image_tokens(internvl)["passed"]
