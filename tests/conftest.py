"""Shared fixtures: tiny zoo models and a small easy-vqa set, built once per test session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    """zoo_dir(family, size="tiny") -> path of a saved tiny model (built once per session)."""
    from genrecal import zoo

    root = tmp_path_factory.mktemp("zoo")
    built: dict[tuple[str, str], str] = {}

    def get(family: str, size: str = "tiny"):
        key = (family, size)
        if key not in built:
            built[key] = str(zoo.build_to_dir(family, root / f"{family}-{size}", size=size, seed=0))
        return built[key]

    return get


@pytest.fixture(scope="session")
def bf16_zoo_dir(zoo_dir, tmp_path_factory):
    """bf16_zoo_dir(family, size="tiny") -> the zoo model saved in bf16 (as real checkpoints and genrecal's
    bf16 runs ship), processor alongside; built once per session."""
    root = tmp_path_factory.mktemp("zoo-bf16")
    built: dict[tuple[str, str], str] = {}

    def get(family: str, size: str = "tiny"):
        if (family, size) not in built:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            src, out = zoo_dir(family, size), root / f"{family}-{size}"
            model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float32)
            model.to(torch.bfloat16).save_pretrained(out)
            AutoProcessor.from_pretrained(src).save_pretrained(out)
            built[family, size] = str(out)
        return built[family, size]

    return get


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
