"""OnnxRuntime: opened by its manifest, the Runtime API, timings, streaming, refusal of tampering.

    python -m pytest tests/export/test_onnx_runtime.py -q
"""
from __future__ import annotations

import shutil

import pytest

from genrecal import runtimes
from genrecal.artifacts import layout
from genrecal.artifacts.manifest import MANIFEST_NAME, ManifestError
from genrecal.runtimes.base import Generation, RuntimeError_, Stream
from genrecal.runtimes.onnxruntime import OnnxRuntime

TIMING_FIELDS = ("load_ms", "preprocess_ms", "vision_encode_ms", "prefill_ms", "prefill_tok_s", "ttft_ms",
                 "decode_ms_per_token", "decode_tok_s", "e2e_ms", "peak_rss_mb")


@pytest.fixture(scope="module")
def rt(onnx_artifact):
    out, _ = onnx_artifact("smolvlm", "int8")
    return OnnxRuntime(out, threads=1)


def test_runtime_api_and_every_timing_field(rt, easy_vqa_sample):
    question, _, image = easy_vqa_sample
    assert isinstance(rt, runtimes.Runtime)
    assert (rt.name, rt.family, rt.manifest.precision) == ("onnxruntime", "smolvlm", "int8")
    gen = rt.generate([image], question, max_new_tokens=6)
    assert isinstance(gen, Generation)
    t = gen.timing
    assert t.tokens_in > 20 and 1 <= t.tokens_out <= 6 and t.tokens_out == len(gen.token_ids)
    missing = [f for f in TIMING_FIELDS if not getattr(t, f) > 0
               and not (f.startswith("decode") and t.tokens_out == 1)]
    assert not missing, f"timing fields left at zero: {missing}"
    assert t.e2e_ms >= t.ttft_ms >= t.prefill_ms and t.extra["threads"] == 1
    assert rt.sessions["decoder"].get_session_options().intra_op_num_threads == 1


def test_stream_yields_pieces_and_returns_the_generation(rt, easy_vqa_sample):
    question, _, image = easy_vqa_sample
    plain = rt.generate([image], question, max_new_tokens=6)
    stream = rt.generate([image], question, max_new_tokens=6, stream=True)
    assert isinstance(stream, Stream)
    assert "".join(stream) == stream.result.text == plain.text
    assert stream.result.token_ids == plain.token_ids


def test_text_only_prompt_skips_the_vision_graph(rt):
    gen = rt.generate([], "Is there a red circle?", max_new_tokens=4)
    assert gen.timing.vision_encode_ms < 1.0 and gen.timing.tokens_out >= 1


def test_runtimes_load_picks_onnxruntime(onnx_artifact):
    out, _ = onnx_artifact("llava", "fp32")
    assert runtimes.load(out, threads=1).name == "onnxruntime"


def test_tampered_graph_is_refused(onnx_artifact, tmp_path):
    src, _ = onnx_artifact("llava", "fp32")
    bad = shutil.copytree(src, tmp_path / "tampered")
    decoder = layout.client_graph(layout.DECODER_GRAPH, "fp32")  # onnx/decoder_model_merged.onnx
    with open(bad / decoder, "r+b") as f:  # flip one byte inside the graph
        f.seek(f.seek(0, 2) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ManifestError, match=f"checksum mismatch for {decoder}"):
        OnnxRuntime(bad)
    (bad / decoder).unlink()
    with pytest.raises(ManifestError, match="missing"):
        OnnxRuntime(bad)


def test_dir_without_manifest_or_of_another_format_is_refused(onnx_artifact, tmp_path):
    src, _ = onnx_artifact("llava", "fp32")
    bare = shutil.copytree(src, tmp_path / "bare")
    (bare / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match="not a genrecal export"):
        OnnxRuntime(bare)
    other = shutil.copytree(src, tmp_path / "other")
    text = (other / MANIFEST_NAME).read_text().replace('"format": "onnx"', '"format": "gguf"')
    (other / MANIFEST_NAME).write_text(text)
    with pytest.raises(RuntimeError_, match="not ONNX"):
        OnnxRuntime(other)
