"""Opening and checking the images a runtime is given, the same way for every backend.

`open_images([path_or_pil, ...])` returns RGB PIL images or raises `ImageRejected` (a
GenrecalError: one line, names the image and the reason). Processors differ in what they refuse
(CLIP-style processors cannot even infer the channel axis of a 1x1 image, Idefics3 silently
upsamples it), so the floor is set here: a side under MIN_SIDE pixels, more than MAX_PIXELS pixels,
or a file PIL cannot decode is refused before any backend sees it.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from genrecal.runtimes.base import RuntimeError_

MIN_SIDE = 8  # pixels; smaller images carry no usable content for any patch-based encoder
MAX_PIXELS = 64_000_000  # PIL's decompression-bomb guard is 89M; refuse earlier with a clear message


class ImageRejected(RuntimeError_):
    """An image that cannot be read or that no processor should be given."""


def open_image(image: Image.Image | str | os.PathLike, index: int = 0) -> Image.Image:
    name = f"image {index}" if isinstance(image, Image.Image) else f"image {index} ({image})"
    if not isinstance(image, Image.Image):
        path = Path(image)
        if not path.is_file():
            raise ImageRejected(f"{name}: file not found")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
            raise ImageRejected(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    return check_image(image, name)


def check_image(image: Image.Image, name: str = "image") -> Image.Image:
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise ImageRejected(f"{name}: {w}x{h} pixels is too small to encode (each side must be >= {MIN_SIDE})")
    if w * h > MAX_PIXELS:
        raise ImageRejected(f"{name}: {w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit; downscale it first")
    if image.mode != "RGB":
        image = image.convert("RGB")  # drops alpha / expands grayscale and palettes, as processors expect
    return image


def open_images(images) -> list[Image.Image]:
    """RGB images from PIL images or paths; None or [] -> []."""
    if images is None:
        return []
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    return [open_image(im, i) for i, im in enumerate(images)]
