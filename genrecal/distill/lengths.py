"""The default `max_length`: the image tokens one image of the largest allowed size costs in
either model, plus room for text.

Real processors turn one photo into hundreds to thousands of tokens (Qwen2-VL by area, SmolVLM
by image splitting, InternVL by tiles), so a fixed limit such as 1024 refuses ordinary photos.
"""
from __future__ import annotations

import math

from PIL import Image

from genrecal.data.render import to_messages
from genrecal.images import MAX_PIXELS

TEXT_TOKENS = 1024
"""Tokens allowed for the chat template, question and answer beside one image's tokens."""
ASPECTS = (1.0, 2.0, 0.5, 4.0, 0.25)
"""Width/height ratios probed at MAX_PIXELS: tiling processors peak at some aspect, others by area."""
PROBE_SIDE = 4096
"""Side of the square image rendered for processors that cannot count their tokens analytically."""


def probe_sizes() -> list[tuple[int, int]]:
    """(height, width) pairs of MAX_PIXELS images at each aspect in ASPECTS."""
    return [(int(math.sqrt(MAX_PIXELS / a)), int(math.sqrt(MAX_PIXELS * a))) for a in ASPECTS]


def max_image_tokens(processor, image_token_id: int | None) -> int:
    """Most tokens one image can take in this model's rendering (0 for a text-only processor).

    Uses the processor's own token count (`_get_num_multimodal_tokens`, what vLLM uses) over
    probe_sizes(); processors without one render a PROBE_SIDE square image and the image tokens
    in the ids are counted.
    """
    count = getattr(processor, "_get_num_multimodal_tokens", None)
    if count is not None:
        try:
            return max(count(image_sizes=probe_sizes())["num_image_tokens"])
        except Exception:  # noqa: BLE001 - a processor whose count needs more arguments: render instead
            pass
    if image_token_id is None:
        return 0
    messages = to_messages([{"role": "user", "content": "<image>\n?"}])
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    probe = Image.new("RGB", (PROBE_SIDE, PROBE_SIDE), (127, 127, 127))
    ids = processor(text=[prompt], images=[[probe]], return_tensors="pt")["input_ids"]
    return int((ids == image_token_id).sum())


def default_max_length(*models) -> int:
    """TEXT_TOKENS + the largest max_image_tokens over the given LoadedVLMs (None entries skipped)."""
    return TEXT_TOKENS + max(max_image_tokens(m.processor, m.image_token_id) for m in models if m is not None)
