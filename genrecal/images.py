"""The one way genrecal opens an image, from training data to the device and the demo.

    from genrecal.images import open_image
    image = open_image("phone.jpg")   # RGB, 8 bits per channel, upright, size-checked

Training (`data/`), distillation, export parity, every runtime, the benchmarks and the demo all
call `open_image`, so a model is trained on the very pixels it is later served. The rule:

- **Orientation**: the EXIF Orientation tag is applied (`PIL.ImageOps.exif_transpose`), as phone
  photos need; the result carries no orientation tag, so it is never applied twice.
- **Transparency**: alpha (RGBA, LA, PA, premultiplied RGBa/La) and palette/colour-key
  transparency are composited on white, transformers' `image_transforms.convert_to_rgb` rule
  (not a plain `convert("RGB")`, which would reveal whatever colour fully transparent pixels hold).
- **High bit depth**: 16-bit (`I;16*`) and 32-bit integer (`I`) images are read as 0..65535 and
  scaled to 0..255 (rounded; values outside are clipped); float (`F`) images in [0, 1] are scaled
  by 255, other float images are clipped to 0..255. PIL's own `convert` would clip a 16-bit
  image to white.
- **Other modes** (1, L, P, CMYK, YCbCr, ...) go through `Image.convert("RGB")`.
- **Animations** (GIF, WebP, APNG): the first frame.
- **Size**: each side at least `MIN_SIDE` pixels and at most `MAX_PIXELS` pixels in all, checked
  from the file header before any pixel is decoded (so a decompression bomb is never allocated).

Imports only Pillow and numpy (no torch, no transformers), so a device bundle can use it.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from genrecal.errors import GenrecalError

MIN_SIDE = 8  # pixels; smaller images carry no usable content for any patch-based encoder
MAX_PIXELS = 64_000_000  # under PIL's 89M bomb guard; above a 50 MP phone photo

# Why an image was refused; `genrecal.data` counts skipped samples under these names.
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
IMAGE_SIZE = "image_size"

_INT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
_WHITE = (255, 255, 255, 255)


class ImageError(GenrecalError):
    """An image that cannot be opened or that no model should be given.

    `reason` is one of MISSING_IMAGE, CORRUPT_IMAGE, IMAGE_SIZE; `str(err)` is the one-line
    reason without the image's name (callers know how to name it).
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


def open_image(source: str | os.PathLike | bytes | Image.Image) -> Image.Image:
    """An upright 8-bit RGB image from a path, encoded bytes or a PIL image (the rule above).

    Returns a new image of mode "RGB", [height, width] as stored after EXIF rotation.
    Raises ImageError: MISSING_IMAGE (no such file), CORRUPT_IMAGE (not decodable: unknown
    format, truncated or corrupt data, an unconvertible mode), IMAGE_SIZE (a side under
    MIN_SIDE or over MAX_PIXELS pixels).
    """
    if isinstance(source, Image.Image):
        check_size(source.size)
        return to_rgb(_upright(source))
    if isinstance(source, (bytes, bytearray)):
        return _decode(io.BytesIO(source))
    path = Path(source)
    if not path.is_file():
        raise ImageError(MISSING_IMAGE, "file not found")
    return _decode(path)


def check_size(size: tuple[int, int]) -> None:
    """Raise ImageError(IMAGE_SIZE) unless each side >= MIN_SIDE and w*h <= MAX_PIXELS."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ImageError(IMAGE_SIZE, f"{w}x{h} pixels is too small to encode (each side must be >= {MIN_SIDE})")
    if w * h > MAX_PIXELS:
        raise ImageError(IMAGE_SIZE, f"{w}x{h} pixels ({w * h / 1e6:.0f} MP) is over the "
                                     f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it first")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB by the rule in the module docstring (orientation aside). May return `image`."""
    if image.mode in _INT_MODES or image.mode == "F":
        image = _to_8bit(image)
    bands = image.getbands()
    if "A" in bands or "a" in bands or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")  # also un-premultiplies RGBa / La, applies palette transparency
        return Image.alpha_composite(Image.new("RGBA", image.size, _WHITE), rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:  # a mode PIL has no RGB conversion for (e.g. LAB, HSV without ICC)
        raise ImageError(CORRUPT_IMAGE, f"cannot convert a {image.mode!r} image to RGB ({exc})") from None


def _decode(fp) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb and odd-but-readable-file warnings: sized below
            with Image.open(fp) as im:
                check_size(im.size)  # header only: nothing decoded yet
                im.load()  # the first frame of an animation
                image = _upright(im)  # a copy: survives closing the file
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # so large that PIL refuses even to open it
        raise ImageError(IMAGE_SIZE, f"over the {MAX_PIXELS / 1e6:.0f} MP limit; downscale it first ({exc})") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, bomb errors, ...)
        raise ImageError(CORRUPT_IMAGE, f"not a readable image ({type(exc).__name__}: {exc})") from None
    return to_rgb(image)


def _upright(image: Image.Image) -> Image.Image:
    """EXIF Orientation applied (a new image without the tag), or a copy when there is none."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # unparsable EXIF: viewers then show the image as stored, and so do we
        return image.copy()


def _to_8bit(image: Image.Image) -> Image.Image:
    """An "L" image from an I / I;16* (0..65535) or F ([0, 1], else 0..255) image."""
    import numpy as np

    data = np.asarray(image, dtype=np.float64)  # [h, w]
    if image.mode == "F":
        data = np.nan_to_num(data)
        scale = 255.0 if data.size and 0.0 <= data.min() and data.max() <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(np.rint(data * scale), 0, 255).astype(np.uint8))
