"""What the demo accepts from a visitor: one image and one question, checked before any model runs.

    from genrecal.demo.inputs import load_image, check_question
    checked = load_image("photo.jpg")       # CheckedImage(image=<RGB PIL>, note="downscaled ...")
    question = check_question("  what colour is the shape? ")

Every refusal is an `InputError` (a GenrecalError) whose message the page shows as it is.
The image is sized from its header before any pixel is decoded, so a decompression bomb is refused
without allocating it; images above `MAX_PIXELS` are downscaled (every processor resizes to a few
hundred pixels a side anyway), and images above `REFUSE_PIXELS` are refused outright.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from genrecal.errors import GenrecalError
from genrecal.runtimes.images import MIN_SIDE

MAX_PIXELS = 1024 * 1024  # larger images are downscaled (keeping the aspect ratio) to fit this
REFUSE_PIXELS = 40_000_000  # a 40-megapixel image is refused: no camera photo needs more for a VLM
MAX_UPLOAD_MB = 20  # upload size cap handed to Gradio (bytes on the wire, before decoding)
MAX_QUESTION_CHARS = 500  # about 120 tokens: far above any VQA question, far below context limits


class InputError(GenrecalError):
    """An image or question the demo will not hand to a model; the message is shown in the page."""


@dataclass
class CheckedImage:
    image: Image.Image  # RGB, at most MAX_PIXELS pixels
    note: str = ""  # what was changed, e.g. "downscaled from 4000x3000 to 1182x886"


def load_image(source: str | os.PathLike | bytes | Image.Image | None) -> CheckedImage:
    """An RGB image from a path, encoded bytes or a PIL image, or an InputError saying why not."""
    if source is None or (isinstance(source, (str, bytes)) and not source):
        raise InputError("no image: upload one or pick an example")
    if isinstance(source, Image.Image):
        return _fit(source)
    name = "the uploaded image" if isinstance(source, bytes) else f"the image {Path(source).name!r}"
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise InputError(f"{name} was not found (the upload may have expired): upload it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # sized below ourselves
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                _check_size(im.size, name)  # header only: nothing decoded yet
                im.load()
                image = ImageOps.exif_transpose(im)  # phone photos carry their rotation in EXIF
    except Image.DecompressionBombError:
        raise InputError(f"{name} is over the {REFUSE_PIXELS / 1e6:.0f} MP limit (far too large to decode "
                         "safely); downscale it first") from None
    except (UnidentifiedImageError, SyntaxError):
        raise InputError(f"{name} is not an image this demo can read (PNG, JPEG, WebP, GIF, BMP, ...)") from None
    except OSError as exc:  # truncated or corrupt data
        raise InputError(f"{name} could not be decoded ({exc})") from None
    return _fit(image)


def _check_size(size: tuple[int, int], name: str) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise InputError(f"{name} is {w}x{h} pixels: too small, each side must be at least {MIN_SIDE} pixels")
    if w * h > REFUSE_PIXELS:
        raise InputError(f"{name} is {w}x{h} pixels ({w * h / 1e6:.0f} MP): over the {REFUSE_PIXELS / 1e6:.0f} MP "
                         "limit; downscale it first")


def _fit(image: Image.Image) -> CheckedImage:
    """RGB and at most MAX_PIXELS pixels; the note says what changed."""
    _check_size(image.size, "the image")
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # drops alpha, expands palettes
    w, h = rgb.size
    if w * h <= MAX_PIXELS:
        return CheckedImage(rgb)
    scale = (MAX_PIXELS / (w * h)) ** 0.5
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
