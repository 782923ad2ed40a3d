"""How an exported pair turns (question, images) into llama.cpp input, exactly as the HF processor
would: the chat template, the image placeholder it renders, how images are resized, and how image
embeddings sit among the text tokens. Export records a `PromptFormat` in the manifest; the runtime
and the parity check replay it. Pure Python (PIL + Jinja), no torch, no llama.cpp.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from jinja2.sandbox import ImmutableSandboxedEnvironment
from PIL import Image

from genrecal.images import to_rgb


def render_chat(template: str, messages: list[dict], **extra) -> str:
    """Render like llama-cpp-python's MTMDChatHandler does (sandboxed Jinja, trim/lstrip blocks)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, **extra)


@dataclass(frozen=True)
class PromptFormat:
    """What the runtime needs beyond the GGUF files to build a prompt like the HF processor.

    placeholder: what the chat template renders for one {"type": "image"} part.
    image_rule: how the HF image processor sizes an image
      ({"mode": "square" | "resize" | "crop" | "qwen2vl" | "none", ...});
      replayed with PIL, which matches HF's own resize to within 1-2 grey levels.
    image_layout: {"mode": "mtmd"} lets libmtmd place the image (and its marker tokens);
      {"mode": "overview", "before": s, "after": s} places one image embedding block between the
      text `before` and `after` — libmtmd's Idefics3 path always adds a tile, HF with splitting off
      does not, so genrecal lays that case out itself.
    """

    placeholder: str
    image_rule: dict = field(default_factory=lambda: {"mode": "none"})
    image_layout: dict = field(default_factory=lambda: {"mode": "mtmd"})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptFormat":
        return cls(**data)

    def render(self, template: str, question: str, n_images: int, marker: str, **tokens) -> str:
        """One user turn, images first (the HF convention), each image part replaced by `marker`."""
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": question}]
        text = render_chat(template, [{"role": "user", "content": content}], **tokens)
        if text.count(self.placeholder) != n_images:
            raise ValueError(f"chat template rendered {text.count(self.placeholder)} image placeholders "
                             f"{self.placeholder!r} for {n_images} image(s)")
        return text.replace(self.placeholder, marker)

    def fit_image(self, image: Image.Image) -> Image.Image:
        """Resize as the HF image processor would, so llama.cpp sees the same pixels; RGB out."""
        image = to_rgb(image)  # a no-op for images from genrecal.images.open_image
        rule = self.image_rule
        if rule["mode"] == "square":  # Idefics3 without splitting: longest edge first, then squashed
            first = longest_edge_size(*image.size, rule["longest_edge"])
            if image.size != first:
                image = image.resize(first, resample=rule.get("resample", 3))
            size = (rule["size"], rule["size"])
        elif rule["mode"] == "resize":  # straight to a fixed size, aspect not kept (InternVL without tiling)
            size = (rule["width"], rule["height"])
        elif rule["mode"] == "crop":  # CLIP (LLaVA): shortest edge to size, then a centre crop
            return center_crop(image, rule)
        elif rule["mode"] == "qwen2vl":
            size = qwen2vl_size(*image.size, rule["factor"], rule["min_pixels"], rule["max_pixels"])
        else:
            return image
        return image if image.size == size else image.resize(size, resample=rule.get("resample", 3))


def center_crop(image: Image.Image, rule: dict) -> Image.Image:
    """CLIPImageProcessor's resize (shortest edge -> rule["shortest_edge"], the other int(size * long /
    short)) then centre crop to rule["width"] x rule["height"] (None: no crop), offsets truncated."""
    w, h = image.size
    short = rule["shortest_edge"]
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if image.size != size:
        image = image.resize(size, resample=rule.get("resample", 3))
    if rule.get("width") is None:
        return image
    cw, ch = rule["width"], rule["height"]
    left, top = int((size[0] - cw) / 2), int((size[1] - ch) / 2)
    return image.crop((left, top, left + cw, top + ch))


def longest_edge_size(w: int, h: int, longest: int) -> tuple[int, int]:
    """(width, height) with the longest side = `longest`, the other truncated then rounded up to even
    (the Idefics3 processor's rule)."""
    if w >= h:
        nh = int(longest / (w / h))
        return longest, max(1, nh + nh % 2)
    nw = int(longest * (w / h))
    return max(1, nw + nw % 2), longest


def qwen2vl_size(w: int, h: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height): sides rounded to multiples of `factor`, area kept within [min, max] pixels."""
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb = max(factor, math.floor(h / beta / factor) * factor)
        wb = max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return wb, hb
