"""`genrecal-bench peers` on the tiny smolvlm zoo student: onnxruntime-genai's builder and llama.cpp's
converter beside genrecal's exports, through the same drivers and timing rule.

    python -m pytest tests/benchmarks/test_peers.py -q

The builder test skips without onnxruntime-genai; the GGUF one without llama-cpp-python or llama.cpp's
converter source (GENRECAL_LLAMA_CPP_SRC or genrecal's cache; it is not downloaded here).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genrecal.runtimes.base import DecodeClock


def _converter_or_skip():
    pytest.importorskip("llama_cpp")
    from genrecal.errors import GenrecalError
    from genrecal.export.gguf.converter import llama_cpp_source

    try:
        return llama_cpp_source(download=False)
    except GenrecalError as exc:
        pytest.skip(str(exc))


def test_decode_clock_excludes_pauses_between_tokens_only():
    clock = DecodeClock(start=0.0)
    clock.token()
    with clock.paused():
        pass
    first_pause = clock._pending_s
    clock.token()
    with clock.paused():  # after the last token: must not be subtracted
        sum(range(200000))
    assert clock.count == 2 and clock.excluded_s == pytest.approx(first_pause)
    assert clock.decode_ms_per_token == pytest.approx((clock.last - clock.first - first_pause) * 1e3)


@pytest.mark.parametrize("family", ["smolvlm", "qwen2_5_vl"])
def test_builder_text_model_matches_pytorch(family, zoo_dir, tmp_path):
    """The student's text model through the builder (fp32) gives PyTorch's logits' argmax at every
    teacher-forced position and PyTorch's greedy tokens; the weight count skips the embedding table.
    qwen2_5_vl: the text weights in a Qwen2.5-VL shell, which genai runs as its `qwen2_5_vl_text` model."""
    pytest.importorskip("onnxruntime_genai")
    from genrecal.benchmarks import bandwidth
    from genrecal.experiments.peer_builds import genai_builder, text_source
    from genrecal.experiments.peer_drivers import open_driver

    text = text_source(Path(zoo_dir(family)), tmp_path / "text")
    genai = genai_builder(text, tmp_path / "genai-fp32", "fp32")
    assert json.loads((genai / "genai_config.json").read_text())["model"]["type"] == {
        "smolvlm": "llama", "qwen2_5_vl": "qwen2_5_vl_text"}[family]
    ids = np.arange(5, 69, dtype=np.int64)  # [64]
    torch_d, genai_d = open_driver("torch", text, 1), open_driver("genai", genai, 1)
    ref, got = torch_d.text_logits(ids), genai_d.text_logits(ids)
    assert got.shape == ref.shape and (got.argmax(-1) == ref.argmax(-1)).all()
    assert np.abs(got - ref).max() < 1e-3
    t_run, g_run = torch_d.greedy(ids[:16], 8), genai_d.greedy(ids[:16], 8)
    assert g_run.tokens == t_run.tokens and len(g_run.tokens) >= 2
    assert g_run.ttft_ms > 0 and g_run.decode_ms_per_token > 0
    params = sum(p.numel() for n, p in torch_d.model.named_parameters()
                 if "embed_tokens" not in n and ".visual." not in n)  # the shell's one-block vision tower
    embed = torch_d.model.get_input_embeddings().weight.numel() * 4
    counted = bandwidth.onnx_run_bytes(genai / "model.onnx")["bytes"]
    assert 4 * params <= counted < 4 * params + embed  # the lookup table is not read per token


def test_peers_gguf_pair_cli(zoo_dir, tmp_path):
    """The CLI end to end on the Q8_0 pair: both files hold the same tensors, so the same agreement."""
    _converter_or_skip()
    from genrecal.benchmarks.cli import main

    out = tmp_path / "peers.json"
    rc = main(["peers", "--work", str(tmp_path / "w"), "--student", zoo_dir("smolvlm"), "--threads", "1",
               "--repeats", "1", "--prompt-tokens", "16", "--decode-tokens", "4", "--agreement-tokens", "64",
               "--pairs", "gguf-q8_0", "--json", str(out), "--md", str(tmp_path / "peers.md")])
    assert rc == 0
    record = json.loads(out.read_text())
    arts = record["artifacts"]
    assert set(arts) == {"torch-fp32", "converter-q8_0.gguf", "genrecal-q8_0.gguf"}
    ours, peer = arts["genrecal-q8_0.gguf"]["agreement"], arts["converter-q8_0.gguf"]["agreement"]
    assert ours["tokens"] == 64 and ours["top1_agreement"] == peer["top1_agreement"] > 0.5
    assert arts["torch-fp32"]["agreement"]["top1_agreement"] == 1.0
    block = record["threads"]["1"]
    assert all(m["decode_tok_s"] > 0 and m["ttft_ms"] > 0 for m in block["artifacts"].values())
    assert block["bandwidth"]["threads"] == 1 and record["pairs"][0]["threads_1"]["tok_s_ratio"] > 0
    assert "gguf-q8_0: genrecal-q8_0.gguf / converter-q8_0.gguf" in (tmp_path / "peers.md").read_text()



def test_peers_mrope_student_cli(zoo_dir, tmp_path):
    """An M-RoPE student (qwen2_5_vl): genai runs the builder's text model, genrecal its artifact with the builder's
    decoder fed M-RoPE ids; both at PyTorch's top-1 in fp32."""
    pytest.importorskip("onnxruntime_genai")
    from genrecal.benchmarks.cli import main

    out = tmp_path / "peers.json"
    rc = main(["peers", "--work", str(tmp_path / "w"), "--student", zoo_dir("qwen2_5_vl"), "--threads", "1",
               "--repeats", "1", "--prompt-tokens", "16", "--decode-tokens", "4", "--agreement-tokens", "64",
               "--pairs", "onnx-fp32-builder", "--no-torch", "--json", str(out)])
    assert rc == 0
    arts = json.loads(out.read_text())["artifacts"]
    assert set(arts) == {"torch-fp32", "genai-fp32", "genrecal-onnx-fp32-builder"}
    assert all(a["agreement"]["top1_agreement"] == 1.0 for a in arts.values())
    manifest = json.loads((tmp_path / "w" / "genrecal-onnx-fp32-builder" / "genrecal_manifest.json").read_text())
    assert "position_ids" in manifest["extra"]["decoder_inputs"] and manifest["family"] == "qwen2_5_vl"


def test_gguf_writers_cli_compares_the_two_files(tmp_path):
    """`genrecal-bench gguf-writers` on the tiny smolvlm: the same tensors at F16, so the same logits."""
    _converter_or_skip()
    from genrecal.benchmarks.cli import main

    out = tmp_path / "gguf_writers.json"
    assert main(["gguf-writers", "--work", str(tmp_path / "w"), "--size", "tiny", "--threads", "1", "--decode", "4",
                 "--repeats", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    files = record["files"]
    assert files["tensors_only_genrecal"] == files["tensors_only_converter"] == []
    assert files["tensor_max_abs_diff"] == 0.0
    assert record["logits"]["max_abs_diff_between"] == 0.0 and record["logits"]["top1_between"] == 1.0
    assert set(record["logits"]["vs_pytorch"]) == set(record["decode_tok_s"]) == {"genrecal", "converter"}

def test_peers_refuses_bad_input_in_one_line(tmp_path):
    from genrecal.experiments.peers import PeersConfig, prepare
    from genrecal.errors import GenrecalError

    with pytest.raises(GenrecalError, match="unknown peers pair"):
        PeersConfig(work=str(tmp_path), pairs=("onnx-int3",))
    with pytest.raises(GenrecalError, match="--decode-tokens must be >= 2"):
        PeersConfig(work=str(tmp_path), decode_tokens=1)
    with pytest.raises(GenrecalError, match="not a transformers model dir"):
        prepare(PeersConfig(work=str(tmp_path), student=str(tmp_path / "missing")), log=lambda m: None)
