"""Greedy-generation accuracy of a PyTorch VLM dir on easy-vqa-style questions (batched, left-padded)."""
from __future__ import annotations

import torch
from PIL import Image
from tqdm.auto import tqdm

from genrecal.data.render import to_messages
from genrecal.data.scoring import exact_match
from genrecal.distill.models import load_vlm
from genrecal.images import open_image


@torch.no_grad()
def answer_batch(vlm, questions: list[str], images: list[Image.Image], max_new_tokens: int = 8) -> list[str]:
    proc = vlm.processor
    prompts = [proc.apply_chat_template(to_messages([{"role": "user", "content": f"<image>\n{q}"}]),
                                        add_generation_prompt=True, tokenize=False) for q in questions]
    side = proc.tokenizer.padding_side
    proc.tokenizer.padding_side = "left"  # generation continues from the right end
    try:
        enc = proc(text=prompts, images=[[im] for im in images], padding=True, return_tensors="pt")
    finally:
        proc.tokenizer.padding_side = side
    out = vlm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=proc.tokenizer.pad_token_id)
    return proc.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def accuracy(model_dir: str, items: list[tuple[str, str, str]], batch_size: int = 32, progress: bool = True,
             desc: str = "eval", max_new_tokens: int = 8, correct=exact_match) -> dict:
    """items: (question, answer, image_path); `correct(prediction, answer) -> bool` (default exact match; the
    scenes benchmark passes a parsed truth as `answer` and its own scorer). Returns accuracy, every prediction
    (in order) and a few examples."""
    vlm = load_vlm(model_dir, "teacher")
    hits, examples, predictions = 0, [], []
    for i in tqdm(range(0, len(items), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = items[i:i + batch_size]
        images = [open_image(p) for _, _, p in chunk]
        preds = answer_batch(vlm, [q for q, _, _ in chunk], images, max_new_tokens)
        for (q, a, _), pred in zip(chunk, map(str.strip, preds)):
            ok = correct(pred, a)
            hits += ok
            predictions.append(pred)
            if len(examples) < 5:
                examples.append({"question": q, "answer": a, "prediction": pred, "correct": bool(ok)})
    return {"accuracy": hits / max(len(items), 1), "n": len(items), "examples": examples, "predictions": predictions}
