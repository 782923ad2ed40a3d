"""llama.cpp's own converter (the llama-cpp-python sdist's convert_hf_to_gguf.py) as genrecal's GGUF path
for qwen2_5_vl and internvl, and what it refuses for llava.

    .venv/bin/python -m pytest tests/export/test_gguf_converter.py -q

Skips, with the reason, when the sdist cannot be found or downloaded (converter.llama_cpp_source) or
sentencepiece (a converter requirement) is missing. ~25 s here with the sdist cached (first run: a
~200 MB download); -m slow adds the InternVL export (~75 s).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from genrecal.export.gguf import GgufExportError, export_gguf
from genrecal.export.gguf import converter
from genrecal.artifacts.manifest import load_manifest


def test_qwen2_5_vl_export_through_the_converter_matches_pytorch(llama_cpp_src, zoo_dir, tmp_path):
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    student = zoo_dir("qwen2_5_vl", "tiny-v4")
    manifest = export_gguf(student, tmp_path / "gguf", "f16", samples=2, steps=8, accuracy_limit=4)
    ref = manifest.parity["reference"]
    assert ref["greedy_identical"] == 2 and ref["top1_agreement"] == 1.0 and ref["prompt_ids_equal"]
    assert ref["max_abs_logit_diff"] <= manifest.parity["thresholds"]["max_abs_logit_diff"]
    extra = load_manifest(tmp_path / "gguf").extra
    assert extra["projector_type"] == "qwen2.5vl_merger" and extra["text_arch"] == "qwen2vl"
    assert extra["writer"] == {"llama_cpp_python": converter.llama_cpp_version()}
    assert extra["tokenizer"]["tokenizer_pre"] == "gpt-2"  # the fallback: the zoo tokenizer's hash is unknown
    runtime = LlamaCppRuntime(tmp_path / "gguf")  # genrecal's runtime loads the converter's pair
    assert runtime is not None


def test_unknown_pre_tokenizer_hash_without_a_fallback_is_one_line(llama_cpp_src, zoo_dir, tmp_path):
    with pytest.raises(GgufExportError, match="pre-tokenizer") as err:
        converter.convert(zoo_dir("qwen2_5_vl", "tiny-v4"), tmp_path / "m.gguf", "f32")
    assert "\n" not in str(err.value)


def test_two_block_vision_tower_is_refused_before_converting(llama_cpp_src, zoo_dir, tmp_path):
    with pytest.raises(GgufExportError, match="needs >= 3"):
        export_gguf(zoo_dir("qwen2_5_vl"), tmp_path / "gguf", "f32", check=False)
    assert not (tmp_path / "gguf").exists()


@pytest.fixture(scope="module")
def internvl_real_vocab(llama_cpp_src, tmp_path_factory):
    """InternVL zoo size tiny-v4 on a real tokenizer (llama.cpp's ggml-vocab-qwen2.gguf, InternVL3's
    vocabulary): the converter recognises its pre-tokenizer hash. ~20 s (151k merges)."""
    from genrecal import zoo

    vocab = llama_cpp_src / "models" / "ggml-vocab-qwen2.gguf"
    return zoo.build_to_dir("internvl", tmp_path_factory.mktemp("zoo") / "internvl", size="tiny-v4", vocab_gguf=vocab)


@pytest.mark.slow  # ~75 s here: a 151k-token vocabulary in every logits row
def test_internvl_export_through_the_converter_matches_pytorch(internvl_real_vocab, tmp_path):
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    manifest = export_gguf(internvl_real_vocab, tmp_path / "gguf", "f16", samples=2, steps=8, accuracy_limit=2)
    ref = manifest.parity["reference"]
    assert ref["greedy_identical"] == 2 and ref["top1_agreement"] == 1.0 and ref["prompt_ids_equal"]
    assert ref["max_abs_logit_diff"] <= manifest.parity["thresholds"]["max_abs_logit_diff"]
    assert ref["image_embed_rel_diff"] <= 5e-3  # genrecal's own writers' tolerance holds here
    extra = load_manifest(tmp_path / "gguf").extra
    assert (extra["text_arch"], extra["projector_type"]) == ("qwen2", "internvl")
    assert extra["tokenizer"]["tokenizer_pre"] == "qwen2"  # recognised by hash, no fallback
    assert LlamaCppRuntime(tmp_path / "gguf") is not None


def test_internvl_with_a_trained_tokenizer_is_refused(llama_cpp_src, zoo_dir, tmp_path):
    with pytest.raises(GgufExportError, match="needs >= 4"):
        export_gguf(zoo_dir("internvl"), tmp_path / "gguf", "f32", check=False)


def test_what_the_converter_refuses_for_llava(llama_cpp_src, zoo_dir, tmp_path):
    """Its LLaVA mmproj is Pixtral's only (CLIP towers need llama.cpp's legacy surgery scripts); recorded so
    a newer sdist that converts it shows up here."""
    with pytest.raises(GgufExportError, match="Unsupported model type: clip_vision_model"):
        converter.convert(zoo_dir("llava"), tmp_path / "x.gguf", "f32", mmproj=True)


def test_source_env_var_without_the_script_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRECAL_LLAMA_CPP_SRC", str(tmp_path))
    with pytest.raises(GgufExportError, match="holds no convert_hf_to_gguf.py"):
        converter.llama_cpp_source()


def test_cached_source_is_found_without_download(tmp_path, monkeypatch):
    src = tmp_path / f"llama_cpp_python-{converter.llama_cpp_version()}" / "vendor" / "llama.cpp"
    src.mkdir(parents=True)
    (src / converter.SCRIPT).write_text("")
    monkeypatch.delenv("GENRECAL_LLAMA_CPP_SRC", raising=False)
    monkeypatch.setenv("GENRECAL_CACHE", str(tmp_path))
    assert converter.llama_cpp_source(download=False) == src
    monkeypatch.setenv("GENRECAL_CACHE", str(tmp_path / "empty"))
    with pytest.raises(GgufExportError, match="is not in"):
        converter.llama_cpp_source(download=False)
