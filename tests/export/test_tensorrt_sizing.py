"""TensorRT plan sizing: limits from the processor, memory from the device profile (TensorRT itself
cannot run here; this checks the arithmetic and the choices it drives).

    python -m pytest tests/export/test_tensorrt_sizing.py -q
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from genrecal.artifacts.profiles import get_profile
from genrecal.export.tensorrt import device_budget, size_plan
from genrecal.export.tensorrt_memory import (
    GIB,
    IMAGE_SIDES,
    MAX_IMAGES,
    Dims,
    PlanSizeError,
    attention_groups,
    choose,
    estimate,
)

# Qwen2-VL-2B-Instruct's published shapes (config.json + preprocessor_config.json); ~2.21e9 params
QWEN2VL_2B = Dims(layers=28, hidden=1536, heads=12, kv_heads=2, head_dim=128, ffn=8960, vocab=151936,
                  v_hidden=1280, v_heads=16, v_ffn=5120, patch=14)
QWEN2VL_2B_WEIGHTS = int(2.21e9 * 2)  # fp16
QWEN2VL_MAX_PIXELS, QWEN2VL_MIN_PIXELS = 12845056, 3136


def _qwen2vl_sides() -> list[tuple[int, tuple[int, int], int]]:
    """(side, one image's pixel_values shape, prompt tokens) as Qwen2-VL's own resize rule gives them."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    out = []
    for side in IMAGE_SIDES:
        h, w = smart_resize(side, side, factor=28, min_pixels=QWEN2VL_MIN_PIXELS, max_pixels=QWEN2VL_MAX_PIXELS)
        patches = (h // 14) * (w // 14)
        out.append((side, (patches, 3 * 2 * 14 * 14), patches // 4 + 20))
    return out


def test_attention_groups_follow_the_pixel_layout():
    assert attention_groups((65536, 1176), 14) == (1, 65536)  # Qwen2-VL: one dense attention
    assert attention_groups((17, 3, 512, 512), 16) == (17, 1024)  # Idefics3 tiles
    assert attention_groups((1, 17, 3, 512, 512), 16) == (17, 1024)


def test_qwen2vl_2b_old_plan_cannot_fit_an_orin_nano_and_the_sized_one_does():
    nano = device_budget(get_profile("jetson-orin-nano"))
    sides = _qwen2vl_sides()
    side, shape, tokens = sides[0]
    assert side == 4096 and shape[0] > 60000  # the processor caps a huge image at max_pixels
    old = estimate(QWEN2VL_2B, shape, MAX_IMAGES, tokens, QWEN2VL_2B_WEIGHTS, nano, "jetson-orin-nano", side)
    assert old.total > 100 * nano  # 4 images at the processor's limit: dense vision attention alone
    assert old.max_prompt > 1024 * MAX_IMAGES  # one such image is ~16k tokens (the old cap was 1024)
    agx = device_budget(get_profile("jetson-agx-orin"))
    sized = choose(QWEN2VL_2B, sides, QWEN2VL_2B_WEIGHTS, agx, "jetson-agx-orin")
    assert sized.total <= agx and sized.image_side < 4096 and sized.max_prompt >= sized.images * sized.image_tokens
    print(f"\nAGX Orin: {sized.images} image(s) at {sized.image_side} px, {sized.total / GIB:.2f} GiB of "
          f"{agx / GIB:.2f}; {sized.memory()['activation_gib']}")
    with pytest.raises(PlanSizeError) as err:  # 4.4 GB of fp16 weights leave no room in 60 % of 8 GB
        choose(QWEN2VL_2B, sides, QWEN2VL_2B_WEIGHTS, nano, "jetson-orin-nano")
    assert "cannot fit jetson-orin-nano" in str(err.value) and "\n" not in str(err.value)


def test_smolvlm_split_plan_holds_a_whole_split_image():
    """SmolVLM-256M shapes with splitting on: one image is 17 tiles x 64 tokens, above the old
    1024-token prompt cap; the processor's limit sets the prompt, memory sets the image count."""
    import torch

    from genrecal import zoo
    from genrecal.families import get_family

    fam = get_family("smolvlm")
    with torch.device("meta"):  # shapes only: the real processor, no 800 MB of random weights
        model, processor = fam.build_tiny("small-split", zoo.train_tokenizer(fam.tokenizer), 0)
    processor.chat_template = fam.chat_template
    holder = SimpleNamespace(student=lambda: (model, processor))
    weights = 2 * sum(p.numel() for p in model.parameters())
    sizes = {}
    for device in ("jetson-orin-nano", "jetson-agx-orin"):
        sizing, shapes = size_plan(holder, weights, get_profile(device))
        assert sizing.image_tokens > 17 * 64 > 1024 and sizing.max_prompt >= sizing.images * sizing.image_tokens
        # pixel_values [1, tiles, 3, H, W]
        assert shapes[sizing.image_side]["pixel_values"][1] == 17 and sizing.total <= sizing.budget
        sizes[device] = sizing.images
    assert 1 <= sizes["jetson-orin-nano"] <= sizes["jetson-agx-orin"] == MAX_IMAGES
    print(f"\nSmolVLM-256M shapes, splitting on: images per plan {sizes}")


def test_export_prints_the_estimate_and_refuses_a_plan_that_cannot_fit(zoo_dir, tmp_path, monkeypatch, capsys):
    from genrecal.artifacts import profiles
    from genrecal.cli import export_main

    args = ["--student", zoo_dir("smolvlm"), "--target", "jetson", "--formats", "tensorrt", "--no-check",
            "--threads", "1"]
    assert export_main([*args, "--out", str(tmp_path / "ok")]) == 0
    printed = capsys.readouterr().out
    assert "TensorRT plan for jetson-orin-nano: 4 image(s)" in printed
    for profile in ("vision/default", "embed/default", "decoder/prefill", "decoder/decode"):
        assert f"activations {profile}" in printed
    tiny = profiles.Profile("tiny-board", "a board with 1 MB", runtime="tensorrt", artifact="tensorrt-plan",
                            threads=1, bandwidth_gbs=1.0, ram_gb=0.001)
    monkeypatch.setitem(profiles.PROFILES, "tiny-board", tiny)
    out = tmp_path / "out"
    code = export_main([*args, "--out", str(out), "--device-profile", "tiny-board"])
    printed = capsys.readouterr().out
    assert code == 1 and not (out / "tensorrt-plan").exists()
    line = next(ln for ln in printed.splitlines() if ln.startswith("tensorrt-plan"))
    assert "error: the TensorRT plan cannot fit tiny-board" in line
    assert export_main(["--student", zoo_dir("smolvlm"), "--out", str(out), "--target", "jetson",
                        "--device-profile", "no-such-board"]) == 2
    assert "unknown profile 'no-such-board'" in capsys.readouterr().err
