"""Inputs the Qwen family tests share: one image question in the chat format, seeded noise images."""
from __future__ import annotations

import numpy as np
from PIL import Image

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is in the image?"}]}]


def image(h: int = 64, w: int = 64, seed: int = 0) -> Image.Image:
    """An h x w RGB image of seeded uniform noise."""
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def encode(processor, images):
    """The processor's tensors for MESSAGES' prompt (generation prompt added) with `images`."""
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return processor(text=[prompt], images=[images], return_tensors="pt")
