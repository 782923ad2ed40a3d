"""genrecal.images.open_image: the pixels a model is given, for inputs as people have them."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from genrecal.images import IMAGE_SIZE, MAX_PIXELS, ImageError, open_image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def phone_jpeg() -> bytes:
    """Stored 64x32, left half red, right half blue, EXIF Orientation 6 (rotate 90 degrees clockwise)."""
    im = Image.new("RGB", (64, 32), RED)
    im.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(im, "JPEG", exif=exif, quality=95)


def gradient16() -> bytes:
    """16-bit grayscale PNG, 256x32: column x holds 257*x (0..65535, dark to bright)."""
    data = np.tile((np.arange(256) * 257).astype(np.uint16), (32, 1))
    return encoded(Image.fromarray(data), "PNG")


def rgba_hidden_red() -> bytes:
    """RGBA 32x32 of red; the left half fully transparent, the right half at alpha 128."""
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    im.paste((255, 0, 0, 128), (16, 0, 32, 32))
    return encoded(im, "PNG")


def palette_transparent() -> bytes:
    """Palette PNG 32x32: index 0 (green) is transparent on the left half, index 1 (blue) opaque."""
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (16, 0, 32, 32))
    return encoded(im, "PNG", transparency=0)


def cmyk_jpeg() -> bytes:
    return encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red ink


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, BLUE)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def webp() -> bytes:
    im = Image.new("RGBA", (32, 32), (0, 0, 255, 255))
    im.paste((0, 255, 0, 0), (0, 0, 16, 32))  # transparent left half holds green
    return encoded(im, "WEBP", lossless=True)


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)  # [h, w, 3]


def test_exif_orientation_is_applied():
    im = open_image(phone_jpeg())
    assert im.size == (32, 64)  # shown upright: 32 wide, 64 high
    px = pixels(im)
    assert np.abs(px[:28] - RED).max() < 40 and np.abs(px[36:] - BLUE).max() < 40  # left half went on top
    assert 0x0112 not in im.getexif()  # never applied twice
    assert open_image(im).size == (32, 64)


def test_16_bit_gradient_keeps_its_tones():
    px = pixels(open_image(gradient16()))
    assert abs(px.mean() - 127.5) < 0.5  # convert("RGB") alone gives ~254: almost white
    assert px[0, :, 0].tolist() == list(range(256))  # 257*x -> x exactly, every column


def test_alpha_is_composited_on_white_like_transformers():
    px = pixels(open_image(rgba_hidden_red()))
    assert (px[:, :16] == WHITE).all()  # the transparent red stays hidden
    assert np.abs(px[:, 16:] - (255, 127, 127)).max() <= 1  # half red over white
    from transformers.image_transforms import convert_to_rgb

    expected = np.asarray(convert_to_rgb(Image.open(io.BytesIO(rgba_hidden_red())), return_numpy=True))
    assert (px == expected).all()


def test_palette_transparency_is_white():
    px = pixels(open_image(palette_transparent()))
    assert (px[:, :16] == WHITE).all() and (px[:, 16:] == BLUE).all()


def test_cmyk_jpeg_becomes_the_right_colour():
    assert np.abs(pixels(open_image(cmyk_jpeg())) - RED).max() < 8


def test_webp_with_alpha():
    px = pixels(open_image(webp()))
    assert (px[:, :16] == WHITE).all() and (px[:, 16:] == BLUE).all()


def test_animated_gif_gives_the_first_frame():
    assert (pixels(open_image(animated_gif())) == RED).all()


@pytest.mark.parametrize("mode, value, expected", [
    ("I", 65535, 255), ("I", 32896, 128), ("F", 0.5, 128), ("F", 200.0, 200), ("1", 1, 255),
    ("LA", (10, 0), 255), ("LA", (10, 255), 10), ("L", 77, 77),
])
def test_other_modes(mode, value, expected):
    assert (pixels(open_image(Image.new(mode, (16, 16), value))) == expected).all()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header says width x height (nothing that large is ever decoded)."""
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize("source, match", [
    (Image.new("RGB", (7, 100)), "7x100 pixels is too small"),
    (_png_claiming(9000, 9000), "9000x9000 pixels \\(81 MP\\) is over the 64 MP limit"),
    (_png_claiming(20000, 20000), "over the 64 MP limit; downscale it first"),  # beyond PIL's own bomb guard
])
def test_size_limits(source, match):
    with pytest.raises(ImageError, match=match) as exc:
        open_image(source)
    assert exc.value.reason == IMAGE_SIZE and MAX_PIXELS == 64_000_000


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(ImageError, match="file not found") as exc:
        open_image(tmp_path / "nope.png")
    assert exc.value.reason == "missing_image"
    with pytest.raises(ImageError, match="not a readable image") as exc:
        open_image(b"\x89PNG\r\n\x1a\n not an image")
    assert exc.value.reason == "corrupt_image"
    cut = cmyk_jpeg()
    with pytest.raises(ImageError, match="not a readable image"):
        open_image(cut[: len(cut) // 2])


CASES = {"phone.jpg": phone_jpeg, "gradient16.png": gradient16, "rgba.png": rgba_hidden_red,
         "palette.png": palette_transparent, "cmyk.jpg": cmyk_jpeg, "anim.gif": animated_gif, "alpha.webp": webp}


@pytest.mark.parametrize("name", list(CASES))
def test_every_layer_gives_the_model_the_same_pixels(name, tmp_path):
    """Training data, runtimes (hence ONNX parity), GGUF parity and the demo: one rule."""
    import json

    from genrecal.data import load_samples
    from genrecal.data.render import load_images
    from genrecal.demo.inputs import load_image
    from genrecal.export.gguf.parity import _image as gguf_parity_image
    from genrecal.runtimes.images import open_images

    path = tmp_path / name
    path.write_bytes(CASES[name]())
    (tmp_path / "data.json").write_text(json.dumps([{"image": name, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a test"}]}]))
    (sample,) = load_samples(tmp_path / "data.json")
    expected = pixels(open_image(path))
    for image in (load_images(sample)[0], open_images([path])[0], load_image(path).image,
                  load_image(path.read_bytes()).image, gguf_parity_image(path)):
        assert image.size == Image.fromarray(expected.astype(np.uint8)).size and (pixels(image) == expected).all()
