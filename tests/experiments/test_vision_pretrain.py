"""Vision pretraining (the quality benchmark's stand-in for a pretrained CLIP tower) on real zoo VLMs."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from genrecal.experiments.vision_pretrain import pretrain_vision
from genrecal.distill.models import load_vlm
from genrecal.distill.stages import student_param_groups


def _tensors(path) -> dict[str, torch.Tensor]:
    return load_file(f"{path}/model.safetensors")


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_pretrain_vision_trains_only_the_encoder_and_probes_learn_colour(family, zoo_dir, tmp_path):
    src = zoo_dir(family)
    info = pretrain_vision(src, tmp_path / "out", steps=60, batch_size=32, lr=1e-3, log=lambda m: None)
    assert info["steps"] == 60 and info["seconds"] > 0
    # colour is a mean-pixel feature: 60 batches of 32 take its probe to at least twice chance (1/8)
    assert info["probe_accuracy"]["color"] > 0.25, info
    assert 0.0 <= info["probe_accuracy"]["shape"] <= 1.0

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out", use_safetensors=True)
    assert type(model).__name__ == load_vlm(src, "student").model.__class__.__name__
    groups = student_param_groups(model)
    trained = {id(p) for p in groups["vision"] + groups["projector"]}
    names = {id(p): n for n, p in model.named_parameters()}
    before, after = _tensors(src), _tensors(tmp_path / "out")
    assert before.keys() == after.keys()  # same architecture, no probe tensors saved
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    encoder_keys = {names[i] for i in trained}
    assert changed and changed <= {k for k in before if any(k.endswith(n.split(".", 1)[-1]) for n in encoder_keys)}
    lm_keys = [k for k in before if "embed_tokens" in k or "lm_head" in k]
    assert lm_keys and not changed & set(lm_keys)


def test_lr_factor_warms_up_then_decays_to_a_floor():
    from genrecal.experiments.vision_pretrain import lr_factor

    assert [lr_factor(s, 10) for s in (0, 5, 9)] == [1.0, 0.5, pytest.approx(0.1)]  # no warmup: as before
    warm = [lr_factor(s, 2000, 100) for s in range(2000)]
    assert warm[0] == pytest.approx(0.01) and warm[99] == 1.0 and warm[100] == 1.0  # no jump after warmup
    assert all(b <= a for a, b in zip(warm[100:], warm[101:])) and warm[-1] == pytest.approx(0.1, abs=1e-3)
