"""What the demo accepts from a visitor: one image and one question, checked before any model runs.

    from genrecal.demo.inputs import load_image, check_question
    checked = load_image("photo.jpg")       # CheckedImage(image=<RGB PIL>, note="downscaled ...")
    question = check_question("  what colour is the shape? ")

Every refusal is an `InputError` (a GenrecalError) whose message the page shows as it is.
The image is opened by `genrecal.images.open_image`, the rule training and every runtime use (EXIF
orientation, alpha on white, 16-bit scaling, one size floor and ceiling; the ceiling is checked
from the header before any pixel is decoded, so a decompression bomb is never allocated). Images
above `FIT_PIXELS` are then downscaled (every processor resizes to a few hundred pixels a side
anyway; this keeps the page's memory and latency bounded).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from genrecal.errors import GenrecalError
from genrecal.images import CORRUPT_IMAGE, MIN_SIDE, MISSING_IMAGE, ImageError, open_image

FIT_PIXELS = 1024 * 1024  # larger images are downscaled (keeping the aspect ratio) to fit this
MAX_UPLOAD_MB = 20  # upload size cap handed to Gradio (bytes on the wire, before decoding)
MAX_QUESTION_CHARS = 500  # about 120 tokens: far above any VQA question, far below context limits


class InputError(GenrecalError):
    """An image or question the demo will not hand to a model; the message is shown in the page."""


@dataclass
class CheckedImage:
    image: Image.Image  # RGB, at most FIT_PIXELS pixels
    note: str = ""  # what was changed, e.g. "downscaled from 4000x3000 to 1182x886"


def load_image(source: str | os.PathLike | bytes | Image.Image | None) -> CheckedImage:
    """An RGB image from a path, encoded bytes or a PIL image, or an InputError saying why not."""
    if source is None or (isinstance(source, (str, bytes)) and not source):
        raise InputError("no image: upload one or pick an example")
    if isinstance(source, Image.Image):
        name = "the image"
    else:
        name = "the uploaded image" if isinstance(source, bytes) else f"the image {Path(source).name!r}"
    try:
        return _fit(open_image(source))
    except ImageError as err:
        raise InputError(_message(name, err)) from None


def _message(name: str, err: ImageError) -> str:
    if err.reason == MISSING_IMAGE:
        return f"{name} was not found (the upload may have expired): upload it again"
    if err.reason == CORRUPT_IMAGE:
        return f"{name} is not an image this demo can read (PNG, JPEG, WebP, GIF, BMP, ...): {err}"
    return f"{name}: {err}"


def _fit(rgb: Image.Image) -> CheckedImage:
    """At most FIT_PIXELS pixels; the note says what changed."""
    w, h = rgb.size
    if w * h <= FIT_PIXELS:
        return CheckedImage(rgb)
    scale = (FIT_PIXELS / (w * h)) ** 0.5
    size = (max(MIN_SIDE, int(w * scale)), max(MIN_SIDE, int(h * scale)))
    small = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return CheckedImage(small, f"downscaled from {w}x{h} to {size[0]}x{size[1]} pixels")


def check_question(text: str | None) -> str:
    """The question stripped of surrounding space, or an InputError if empty or over the cap."""
    question = (text or "").strip()
    if not question:
        raise InputError("the question is empty: type a question about the image")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in question):
        raise InputError("the question contains control characters")
    return question
