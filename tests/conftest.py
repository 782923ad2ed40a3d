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
def evqa_train(tmp_path_factory):
    from genrecal.data import write_easy_vqa

    return str(write_easy_vqa(tmp_path_factory.mktemp("evqa") / "train", split="train", limit=64, seed=0))
