"""bf16 students (the dtype real checkpoints and genrecal's bf16 runs ship) through `genrecal-export`
for every target, checks on: exit 0, parity recorded for every artifact, every precision computed from
fp32, and the clean `hf/` student still bf16.

    python -m pytest tests/export/test_export_bf16.py -q            # one family per target
    python -m pytest tests/export/test_export_bf16.py -q -m slow    # every other family x target

The student is a zoo model saved with `model.to(torch.bfloat16).save_pretrained(...)` and its processor.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from safetensors import safe_open

from genrecal.cli import export_main
from genrecal.artifacts import layout
from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.layout import supported_families as gguf_families
from genrecal.families import get_family, with_format
from genrecal.artifacts.manifest import load_manifest

# (family, target) pairs in the default run: one per target, the qwen2_vl cpu case among them
DEFAULT = {("qwen2_vl", "cpu"), ("smolvlm", "phone"), ("internvl", "jetson")}  # internvl: list patch size
CASES = [(f, t) for t in ("cpu", "phone", "jetson") for f in with_format("onnx")
         if t != "phone" or f in gguf_families()]
FLOAT_TYPES = {"cpu": {onnx.TensorProto.FLOAT}, "jetson": {onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT}}


def _param(family: str, target: str):
    return pytest.param(family, target, id=f"{family}-{target}",
                        marks=() if (family, target) in DEFAULT else pytest.mark.slow)


def _safetensors_dtypes(model_dir: Path) -> set[str]:
    dtypes = set()
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            dtypes |= {f.get_slice(k).get_dtype() for k in f.keys()}
    return dtypes


def _float_initializers(graph_path: Path) -> set[int]:
    """Data types of the float initializers of a graph (external data not loaded)."""
    model = onnx.load(str(graph_path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    return {t.data_type for t in model.graph.initializer if t.data_type in floats}


def test_every_family_with_an_onnx_wrapper_is_covered():
    assert {f for f, _ in CASES} == set(with_format("onnx")) and {f for f, t in CASES if t == "phone"} == set(
        gguf_families())
    assert DEFAULT <= set(CASES) and {t for _, t in DEFAULT} == {"cpu", "phone", "jetson"}


def _student(family: str, target: str, bf16_zoo_dir) -> Path:
    route = get_family(family).gguf  # its zoo size and vocabulary for llama.cpp's converter
    if target != "phone" or (route.zoo_size, route.zoo_vocab) == ("tiny", None):
        return Path(bf16_zoo_dir(family))
    size, vocab = route.zoo_size, route.zoo_vocab
    if vocab:
        from genrecal.export.gguf.converter import llama_cpp_source

        try:
            vocab = llama_cpp_source() / "models" / vocab
        except GgufExportError as exc:
            pytest.skip(f"llama.cpp's converter is not available: {exc}")
    return Path(bf16_zoo_dir(family, size, vocab))


@pytest.mark.parametrize("family, target", [_param(f, t) for f, t in CASES])
def test_bf16_student_exports_with_checks(family, target, bf16_zoo_dir, tmp_path, capsys):
    student, out = _student(family, target, bf16_zoo_dir), tmp_path / "out"
    assert _safetensors_dtypes(student) == {"BF16"}
    # jetson: genrecal's own ONNX + plan path by name (Edge-LLM's, which internvl would take: test_edgellm_slow.py)
    own = ["--formats", "onnx,tensorrt"] if target == "jetson" else []
    code = export_main(["--student", str(student), "--target", target, "--out", str(out), "--threads", "1", *own])
    printed = capsys.readouterr()
    print(printed.out)  # the parity table, shown with -s
    assert code == 0, printed.out + printed.err
    assert "Traceback" not in printed.err
    summary = json.loads((out / layout.SUMMARY_NAME).read_text())
    for record in summary["artifacts"]:
        assert record["status"] == "ok" and record["parity"]["passed"] is True, record
    # the clean student keeps the checkpoint's dtype
    assert _safetensors_dtypes(out / layout.HF_DIR) == {"BF16"}
    assert load_manifest(out / layout.HF_DIR).precision == "bfloat16"
    assert json.loads((out / layout.HF_DIR / "config.json").read_text())["dtype"] == "bfloat16"
    # every precision is computed from fp32: no bf16 weight in any graph
    for record in summary["artifacts"]:
        if record["format"] == "tensorrt" or record["precision"] in ("fp32", "fp16"):
            graph = (layout.DECODER_GRAPH if record["format"] == "tensorrt"
                     else layout.client_graph(layout.DECODER_GRAPH, record["precision"]))
            types = _float_initializers(out / record["dir"] / graph)
            assert types and types <= FLOAT_TYPES["cpu" if record["precision"] == "fp32" else "jetson"], types
        if record["precision"] == "fp32":
            assert record["parity"]["max_abs_diff"] <= 1e-3 and record["parity"]["greedy_identical"] == 1.0
