"""Real image sizes: the default max_length fits one large photo, too_long names the flag, --image-root,
SDPA in the Recalibrator, and kd over padded vocabularies."""
import json
import os

import pytest
import torch
from PIL import Image

from genrecal.cli import main
from genrecal.data.render import render
from genrecal.data.samples import DataError, Sample, load_samples
from genrecal.distill.lengths import TEXT_TOKENS, default_max_length, max_image_tokens
from genrecal.distill.models import load_vlm
from genrecal.distill.recalibrator import Recalibrator


def photo(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise(size, 40).convert("RGB").save(path)
    return path


def record(image, question="what shape is this?", answer="a circle"):
    return {"image": image, "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                              {"from": "gpt", "value": answer}]}


@pytest.mark.parametrize("family,size", [("qwen2_vl", "tiny"), ("llava", "tiny"), ("smolvlm", "tiny"),
                                         ("smolvlm", "tiny-split"), ("internvl", "tiny"), ("idefics3", "tiny-split")])
def test_default_max_length_fits_a_large_photo(zoo_dir, tmp_path, family, size):
    """Image splitting (SmolVLM, Idefics3) turns one photo into 17 tiles' tokens: still within the default."""
    vlm = load_vlm(zoo_dir(family, size), "student")
    image = photo(tmp_path / "big.png", (1600, 1200))
    messages = [{"role": "user", "content": "<image>\nwhat shape is this?"},
                {"role": "assistant", "content": "a circle"}]
    sample = Sample([image], messages, "data.json", 0)
    enc = render(vlm.processor, sample, max_length=default_max_length(vlm), image_token_id=vlm.image_token_id)
    n_image = int((enc.input_ids == vlm.image_token_id).sum())
    assert 0 < n_image <= max_image_tokens(vlm.processor, vlm.image_token_id)
    assert default_max_length(vlm) == TEXT_TOKENS + max_image_tokens(vlm.processor, vlm.image_token_id)


def test_too_long_names_the_length_and_the_flag(zoo_dir, evqa_train, tmp_path, capsys):
    rc = main(["distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"), "--data", evqa_train,
               "--out", str(tmp_path / "o"), "--max-length", "40", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "tokens > max_length 40" in err and "--max-length" in err and "too_long" in err


def test_image_root_apart_from_the_json_with_symlinks_inside(tmp_path):
    """The LLaVA layout: data JSON in one place, `coco/` under an image root and a symlink to elsewhere."""
    store = tmp_path / "mnt" / "coco"
    photo(store / "train2017" / "a.jpg", (64, 48))
    root = tmp_path / "images"
    root.mkdir()
    os.symlink(store, root / "coco")
    data = tmp_path / "meta" / "llava.json"
    data.parent.mkdir()
    data.write_text(json.dumps([record("coco/train2017/a.jpg")]))
    (sample,) = load_samples(data, image_root=root)
    assert sample.images == [(store / "train2017" / "a.jpg").resolve()]
    photo(tmp_path / "secret.png", (64, 48))
    for escape in ("../secret.png", str(tmp_path / "secret.png"), "coco/../../secret.png"):
        data.write_text(json.dumps([record(escape)]))
        with pytest.raises(DataError, match="path_escape"):
            load_samples(data, image_root=root)
    beside = root / "data.json"  # without --image-root the old rule holds: the link leaves the JSON's dir
    beside.write_text(json.dumps([record("coco/train2017/a.jpg")]))
    with pytest.raises(DataError, match="path_escape"):
        load_samples(beside)


def test_sdpa_recalibrator_equals_eager(zoo_dir):
    t, s = load_vlm(zoo_dir("llava"), "teacher"), load_vlm(zoo_dir("qwen2_vl"), "student")
    recal = Recalibrator.from_models(t.model, s.model, s.family.name).eval()
    d_s = s.model.config.get_text_config().hidden_size
    x, mask = torch.randn(2, 9, d_s), torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        fast = recal(x, mask)
        assert recal.last_attention is None
        slow = recal(x, mask, keep_attention=True)
    assert recal.last_attention is not None and recal.last_attention.shape[-2:] == (9, 9)
    torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1, :6], slow[1, :6], atol=1e-5, rtol=1e-5)


def test_kd_ignores_head_rows_past_the_tokenizer(zoo_dir):
    """Qwen2-VL-7B -> 2B: same tokenizer, 152064 vs 151936 head rows. Padding rows must not count."""
    from genrecal.distill.config import DistillConfig
    from genrecal.distill.objective import DistillObjective

    s = load_vlm(zoo_dir("qwen2_vl"), "student")
    vocab, d = len(s.tokenizer), s.model.config.get_text_config().hidden_size
    torch.manual_seed(0)
    head = torch.nn.Linear(d, vocab, bias=False)
    padded = torch.nn.Linear(d, vocab + 64, bias=False)
    with torch.no_grad():
        padded.weight[:vocab] = head.weight
        padded.weight[vocab:] = torch.randn(64, d) * 5  # rows no token maps to, with large logits
    objective = DistillObjective(s.model, None, DistillConfig(student="s", teacher="t"), (vocab, vocab))
    rows = [torch.randn(3, d)], [torch.randn(3, d)]
    with torch.no_grad():
        exact, with_pad = objective._kd(*rows, head), objective._kd(*rows, padded)
        with pytest.raises(RuntimeError):  # what comparing whole heads did: a shape mismatch
            DistillObjective(s.model, None, objective.cfg, (0, None))._kd(*rows, padded)
    torch.testing.assert_close(exact, with_pad)


def test_kd_runs_on_a_padded_teacher_head(zoo_dir, evqa_train, tmp_path):
    from genrecal import zoo

    teacher = load_vlm(str(zoo.build_to_dir("qwen2_vl", tmp_path / "t0", seed=1)), "teacher")
    teacher.model.resize_token_embeddings(len(teacher.tokenizer) + 37, pad_to_multiple_of=64)
    assert teacher.model.get_output_embeddings().weight.shape[0] > len(teacher.tokenizer)
    teacher.model.save_pretrained(tmp_path / "padded")
    teacher.processor.save_pretrained(tmp_path / "padded")
    args = ["distill", "--teacher", str(tmp_path / "padded"), "--student", zoo_dir("qwen2_vl"), "--data", evqa_train,
            "--out", str(tmp_path / "kd"), "--method", "kd", "--max-steps", "2", "--batch-size", "4", "--no-progress"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (tmp_path / "kd" / "train_log.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(ln["kd"] >= 0 for ln in lines)


def test_gradient_checkpointing_gives_the_same_training(zoo_dir, evqa_train, tmp_path):
    from safetensors.torch import load_file

    outs = []
    for setting in ("off", "on"):
        out = tmp_path / setting
        assert main(["distill", "--teacher", zoo_dir("llava"), "--student", zoo_dir("qwen2_vl"), "--data", evqa_train,
                     "--out", str(out), "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3", "--no-progress",
                     "--gradient-checkpointing", setting]) == 0
        outs.append(load_file(str(out / "student" / "model.safetensors")))
    assert max((outs[0][k] - outs[1][k]).abs().max().item() for k in outs[0]) < 1e-6
