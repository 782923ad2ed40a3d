"""What the Qwen family tests share: one image question in the chat format, seeded noise images, and the
three-stage distillation check."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is in the image?"}]}]


def image(h: int = 64, w: int = 64, seed: int = 0) -> Image.Image:
    """An h x w RGB image of seeded uniform noise."""
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def encode(processor, images):
    """The processor's tensors for MESSAGES' prompt (generation prompt added) with `images`."""
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return processor(text=[prompt], images=[images], return_tensors="pt")


def check_three_stages(zoo_dir, evqa_train: str, out: Path, teacher: str, student: str) -> None:
    """`genrecal distill` teacher -> student, all three stages, 6 steps: the stages' logged losses are finite
    and fall, the Recalibrator is the student family's, the saved student carries the zoo student's tensors
    only (no Recalibrator) and reloads and generates."""
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from genrecal.cli import main

    args = ["distill", "--teacher", zoo_dir(teacher), "--student", zoo_dir(student), "--data", evqa_train,
            "--out", str(out), "--max-steps", "6", "--batch-size", "4", "--lr", "1e-3", "--min-lr", "1e-4",
            "--checkpoint-every", "2", "--no-progress"]
    assert main(args) == 0
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [ln["stage"] for ln in lines] == ["align"] + ["distill"] * 4 + ["sft"]
    assert {"ar", "kl", "reg_ar", "reg_kl"} <= set(lines[0]) and {"ar", "kl", "sft"} <= set(lines[1])
    assert all(np.isfinite(v) for ln in lines for k, v in ln.items() if k in ("ar", "kl", "sft", "reg_ar"))
    assert lines[4]["ar"] < lines[0]["ar"] and lines[4]["sft"] < lines[1]["sft"]
    meta = json.loads((out / "recalibrator" / "recalibrator_config.json").read_text())
    assert meta["student_family"] == student
    with safe_open(str(next((out / "student").glob("*.safetensors"))), "pt") as sf:
        keys = set(sf.keys())
    with safe_open(str(next(Path(zoo_dir(student)).glob("*.safetensors"))), "pt") as sf:
        assert keys == set(sf.keys())  # the clean student: no Recalibrator tensors
    model = AutoModelForImageTextToText.from_pretrained(out / "student").eval()
    processor = AutoProcessor.from_pretrained(out / "student")
    enc = encode(processor, [image()])
    with torch.no_grad():
        assert model.generate(**enc, max_new_tokens=3, do_sample=False).shape[1] <= enc["input_ids"].shape[1] + 3
