"""Idefics3 / SmolVLM with image splitting on (as real checkpoints ship): the zoo's "-split" sizes,
and ONNX + GGUF exports that keep PyTorch's logits and greedy tokens on images large enough to
split into many tiles.

    python -m pytest tests/export/test_image_splitting.py -q -s
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genrecal.export.onnx import OnnxBuild
from genrecal.families.idefics3 import SPLIT_TILES
from genrecal.runtimes.onnxruntime import OnnxRuntime
from genrecal.runtimes.prompt import prepare_inputs

FAMILIES = ["smolvlm", "idefics3"]
SIZES = [(512, 768), (1376, 768), (800, 600), (64, 64)]  # (width, height); 64 px is upscaled and split too
QUESTION = "What shape is in the image?"
STEPS = 8


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth random colour fields (not noise): tiles differ from each other and from the global view."""
    rng = np.random.RandomState(seed + w + h)
    small = rng.randint(0, 256, (max(h // 64, 2), max(w // 64, 2), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def _tiles(enc: dict) -> int:
    return int(np.asarray(enc["pixel_values"]).shape[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_split_zoo_size_tiles_like_a_real_checkpoint(family, zoo_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(zoo_dir(family, "tiny-split"))
    ip = processor.image_processor
    assert ip.do_image_splitting and ip.size["longest_edge"] == SPLIT_TILES * ip.max_image_size["longest_edge"]
    tiles = {size: _tiles(prepare_inputs(processor, [_image(*size)], QUESTION)) for size in SIZES}
    assert tiles[(512, 768)] == 3 * 4 + 1 and tiles[(64, 64)] == SPLIT_TILES ** 2 + 1, tiles
    assert all(t >= 13 for t in tiles.values())
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    ids = processor(text=[text], images=[[_image(512, 768)]], return_tensors="np")["input_ids"][0]
    assert "<row_4_col_3>" in processor.tokenizer.decode(ids)
    assert len(processor.tokenizer.tokenize("\n\n")) == 1  # as in real vocabularies; libmtmd looks it up


def _torch_greedy(model, enc: dict, steps: int) -> tuple[list[int], list[np.ndarray]]:
    inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()}
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, num_beams=1, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences[0, enc["input_ids"].shape[1]:].tolist(), [s[0].numpy() for s in out.logits]


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_fp32_matches_pytorch_with_splitting(family, zoo_dir, tmp_path):
    build = OnnxBuild(Path(zoo_dir(family, "tiny-split")), tmp_path / "work", check=True, threads=1)
    manifest = build.build(tmp_path / "onnx-fp32", "fp32", "cpu")
    assert manifest.parity["passed"] and manifest.parity["greedy_identical"] == 1.0  # easy-vqa: 17 tiles each
    model, processor = build.student()
    rt = OnnxRuntime(tmp_path / "onnx-fp32", threads=1)
    for size in SIZES:
        enc = prepare_inputs(processor, [_image(*size)], QUESTION)
        tokens, logits = _torch_greedy(model, enc, STEPS)
        forced = rt.logits_for(enc, STEPS, forced=tokens)
        diff = max(np.abs(a - b).max() for a, b in zip(forced.step_logits, logits))
        print(f"\n{family} {size} {_tiles(enc)} tiles, {enc['input_ids'].shape[1]} tokens: max|diff| {diff:.1e}")
        assert diff < 1e-3
        assert rt.logits_for(enc, STEPS).tokens == tokens  # free-running greedy


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_f16_matches_pytorch_with_splitting(family, zoo_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    from genrecal.export.gguf import export_gguf, parity
    from genrecal.export.gguf.export import load_source
    from genrecal.export.gguf.layout import MMPROJ_FILE, MODEL_FILE

    src = zoo_dir(family, "tiny-split")
    out = tmp_path / "gguf-f16"
    manifest = export_gguf(src, out, "f16", check=True, threads=1, accuracy_limit=4)
    ref = manifest.parity["reference"]
    assert manifest.parity["passed"] and ref["prompt_ids_equal"] and ref["greedy_identical"] == 3
    paths = []
    for size in SIZES:
        paths.append(tmp_path / f"{size[0]}x{size[1]}.png")
        _image(*size).save(paths[-1])
    model, processor = load_source(Path(src))
    spec = parity.PairSpec(out / MMPROJ_FILE, parity.PromptFormat.from_dict(manifest.extra["prompt_format"]), threads=1)
    with parity.torch_threads(1):
        got = parity.compare(model, processor, spec, out / MODEL_FILE, [(QUESTION, "", p) for p in paths], STEPS)
    print(f"\n{family} GGUF f16, {len(SIZES)} split images: max|logit diff| {got['max_abs_logit_diff']:.1e}, "
          f"image embeddings {got['image_embed_rel_diff']:.1e} (relative)")
    assert got["prompt_ids_equal"] and got["greedy_identical"] == len(SIZES) and got["top1_agreement"] == 1.0
    assert got["max_abs_logit_diff"] < parity.LOGIT_TOL["f16"] and got["image_embed_rel_diff"] < parity.EMBED_REL_TOL
