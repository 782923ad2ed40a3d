"""Opening the images a runtime is given, the same way for every backend (and as training did).

`open_images([path_or_pil, ...])` returns RGB PIL images or raises `ImageRejected` (a
GenrecalError: one line, names the image and the reason). The rule itself (EXIF orientation,
alpha on white, 16-bit scaling, size limits) is `genrecal.images.open_image`, shared with the
training data, export parity and the demo. Processors differ in what they refuse (CLIP-style
processors cannot even infer the channel axis of a 1x1 image, Idefics3 silently upsamples it), so
its size floor is applied before any backend sees an image.
"""
from __future__ import annotations

import os

from PIL import Image

from genrecal.images import ImageError
from genrecal.images import open_image as _open_image
from genrecal.runtimes.base import RuntimeError_


class ImageRejected(RuntimeError_):
    """An image that cannot be read or that no processor should be given."""


def open_image(image: Image.Image | str | os.PathLike, index: int = 0) -> Image.Image:
    """One RGB image (see `genrecal.images.open_image`); ImageRejected names it as `image {index}`."""
    name = f"image {index}" if isinstance(image, Image.Image) else f"image {index} ({image})"
    try:
        return _open_image(image)
    except ImageError as err:
        raise ImageRejected(f"{name}: {err}") from None


def open_images(images) -> list[Image.Image]:
    """RGB images from PIL images or paths; None or [] -> []."""
    if images is None:
        return []
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    return [open_image(im, i) for i, im in enumerate(images)]
