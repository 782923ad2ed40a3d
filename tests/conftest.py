"""Shared fixtures: tiny zoo models, llama.cpp's source (its converter) and a small easy-vqa set, built or found
once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    """zoo_dir(family, size="tiny", vocab_gguf=None) -> path of a saved tiny model (built once per session;
    vocab_gguf: a llama.cpp vocab-only GGUF whose real tokenizer the model uses, see zoo.build)."""
    from genrecal import zoo

    root = tmp_path_factory.mktemp("zoo")
    built: dict[tuple[str, str], str] = {}

    def get(family: str, size: str = "tiny", vocab_gguf=None):
        key = (family, size, str(vocab_gguf))
        if key not in built:
            name = f"{family}-{size}" + (f"-{Path(vocab_gguf).stem}" if vocab_gguf else "")
            built[key] = str(zoo.build_to_dir(family, root / name, size=size, seed=0, vocab_gguf=vocab_gguf))
        return built[key]

    return get


@pytest.fixture(scope="session")
def llama_cpp_src():
    """llama.cpp's source dir from the installed llama-cpp-python's sdist (its converter and legacy
    scripts); skips, with the reason, when it cannot be found or downloaded or sentencepiece is missing."""
    from genrecal.export.gguf import GgufExportError, converter

    pytest.importorskip("sentencepiece", reason="llama.cpp's converter imports sentencepiece")
    pytest.importorskip("llama_cpp")
    try:
        return converter.llama_cpp_source()
    except GgufExportError as exc:
        pytest.skip(f"llama.cpp's converter is not available: {exc}")


@pytest.fixture(scope="session")
def bf16_zoo_dir(zoo_dir, tmp_path_factory):
    """bf16_zoo_dir(family, size="tiny") -> the zoo model saved in bf16 (as real checkpoints and genrecal's
    bf16 runs ship), processor alongside; built once per session."""
    root = tmp_path_factory.mktemp("zoo-bf16")
    built: dict[tuple[str, str], str] = {}

    def get(family: str, size: str = "tiny", vocab_gguf=None):
        if (family, size, str(vocab_gguf)) not in built:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            src = zoo_dir(family, size, vocab_gguf)
            out = root / Path(src).name
            model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float32)
            model.to(torch.bfloat16).save_pretrained(out)
            AutoProcessor.from_pretrained(src).save_pretrained(out)
            built[family, size, str(vocab_gguf)] = str(out)
        return built[family, size, str(vocab_gguf)]

    return get



@pytest.fixture
def bench(capsys):
    """bench(*argv) -> (exit code, stdout, stderr) of `genrecal-bench` run in this process."""
    import torch

    from genrecal.cli import bench_main

    def run(*argv: str):
        before = torch.get_num_threads()
        try:
            code = bench_main([str(a) for a in argv])
        finally:
            torch.set_num_threads(before)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run

def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests skip, with the reason, where torch sees no CUDA device."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason=f"needs a CUDA device (torch {torch.__version__} sees none)")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def evqa_train(tmp_path_factory):
    from genrecal.data import write_easy_vqa

    return str(write_easy_vqa(tmp_path_factory.mktemp("evqa") / "train", split="train", limit=64, seed=0))
