"""A renderer of easy-vqa-style images and questions: unlimited training data in easy-vqa's style.

    python -c "from genrecal.data.shapes import write_shapes; write_shapes('out/shapes', images=2000)"

easy-vqa ships 4,000 training images; small vision towers trained from scratch memorise them.
This draws new ones the way easy-vqa's images look (measured on its package data, the generator
itself is not shipped): one shape (circle, upright triangle, rectangle) in one of its 8 pure
colours, 8-34 px across, anywhere on a 64x64 pastel background (each channel 230-255),
anti-aliased. Questions use easy-vqa's 24 templates with its mix of kinds (74% yes/no, 13% shape,
13% colour) and its way of picking the asked-about attribute uniformly (so "is there a red shape?"
is mostly "no"). Used to train the quality benchmark's teacher; evaluation stays on easy-vqa.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from genrecal.data.easy_vqa import check_replaceable
from genrecal.fsutil import atomic_dir

SIZE = 64
SUPERSAMPLE = 4  # drawn 4x larger and box-downsampled: anti-aliased edges like easy-vqa's
SHAPES = ("circle", "rectangle", "triangle")
COLORS = {  # easy-vqa's fill colours, read off its PNGs
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "teal": (0, 128, 128), "brown": (165, 42, 42), "gray": (128, 128, 128), "black": (0, 0, 0),
}
MIN_EXTENT, MAX_EXTENT = 8, 34  # shape width/height in px, as measured on easy-vqa train

SHAPE_QUESTIONS = ("what shape is in the image?", "what shape does the image contain?",
                   "what shape is present?", "what is the {color} shape?")
COLOR_QUESTIONS = ("what color is the shape?", "what color is the {shape}?",
                   "what is the color of the {shape}?", "what is the color of the shape?")
# (template, negated); {x} is "a <shape>" or "a <colour> shape"
YES_NO_QUESTIONS = (("is there {x}?", False), ("is there {x} in the image?", False),
                    ("does the image contain {x}?", False), ("is {x} present?", False),
                    ("is there not {x}?", True), ("is there not {x} in the image?", True),
                    ("does the image not contain {x}?", True), ("is no {y} present?", True))
KIND_WEIGHTS = {"yes_no": 0.736, "shape": 0.130, "color": 0.134}  # easy-vqa train: 28,407 / 5,002 / 5,166


def draw(shape: str, color: str, rng: random.Random) -> Image.Image:
    """One 64x64 RGB image of `shape` in `color` at a random size and position."""
    bg = tuple(rng.randint(230, 255) for _ in range(3))
    big = SIZE * SUPERSAMPLE
    im = Image.new("RGB", (big, big), bg)
    pen = ImageDraw.Draw(im)
    w = rng.randint(MIN_EXTENT, MAX_EXTENT)
    h = {"circle": w, "triangle": max(MIN_EXTENT, round(w * 0.87)),
         "rectangle": rng.randint(MIN_EXTENT, MAX_EXTENT)}[shape]
    x0, y0 = rng.randint(0, SIZE - w), rng.randint(0, SIZE - h)
    paint(pen, shape, [c * SUPERSAMPLE for c in (x0, y0, x0 + w, y0 + h)], COLORS[color])
    return im.resize((SIZE, SIZE), Image.Resampling.BOX)


def paint(pen: ImageDraw.ImageDraw, shape: str, box: list[float], fill: tuple[int, int, int]) -> None:
    """Fill `shape` into box [x0, y0, x1, y1] (supersampled px); a triangle is upright, its apex top centre."""
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "rectangle":
        pen.rectangle(box, fill=fill)
    else:  # upright, about equilateral
        pen.polygon([((box[0] + box[2]) / 2, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)


def question(shape: str, color: str, rng: random.Random, kind_weights: dict | None = None) -> tuple[str, str]:
    """One (question, answer) about an image of `shape` in `color`, in easy-vqa's templates.

    kind_weights: {"yes_no", "shape", "color"} -> weight; default easy-vqa's mix (KIND_WEIGHTS).
    """
    weights = kind_weights or KIND_WEIGHTS
    kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    if kind == "shape":
        return rng.choice(SHAPE_QUESTIONS).format(color=color), shape
    if kind == "color":
        return rng.choice(COLOR_QUESTIONS).format(shape=shape), color
    template, negated = rng.choice(YES_NO_QUESTIONS)
    if rng.random() < 0.5:  # about a shape or about a colour, the asked value uniform
        asked = rng.choice(SHAPES)
        x, y, present = f"a {asked}", asked, asked == shape
    else:
        asked = rng.choice(list(COLORS))
        x, y, present = f"a {asked} shape", f"{asked} shape", asked == color
    return template.format(x=x, y=y), "yes" if present != negated else "no"


def generate(images: int, questions_per_image: int = 4, seed: int = 0, kind_weights: dict | None = None):
    """Yield (image, [(question, answer), ...]) for `images` random images (deterministic in seed)."""
    rng = random.Random(seed)
    for _ in range(images):
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        im = draw(shape, color, rng)
        qas = list(dict.fromkeys(question(shape, color, rng, kind_weights) for _ in range(questions_per_image)))
        yield im, qas


def write_shapes(out_dir: str | Path, images: int, questions_per_image: int = 4, seed: int = 0,
                 kind_weights: dict | None = None) -> Path:
    """Write `out_dir/data.json` (LLaVA format, one record per question) and `out_dir/images/`.

    Built in a temporary sibling dir and renamed into place; an existing `out_dir` is replaced
    only if it holds a `data.json` (a previous output). Returns `out_dir`.
    """
    out_dir = Path(out_dir).resolve()
    check_replaceable(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        records = []
        for i, (im, qas) in enumerate(generate(images, questions_per_image, seed, kind_weights)):
            name = f"images/{i}.png"
            im.save(tmp / name)
            records += [{"id": f"shapes-{seed}-{i}-{k}", "image": name,
                         "conversations": [{"from": "human", "value": f"<image>\n{q}"},
                                           {"from": "gpt", "value": a}]}
                        for k, (q, a) in enumerate(qas)]
        (tmp / "data.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return out_dir
