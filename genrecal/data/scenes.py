"""Rendered multi-object scenes in easy-vqa's style, with compositional, multi-token answers.

    python -c "from genrecal.data.scenes import write_scenes; write_scenes('out/scenes', images=2000)"

A scene is 2-5 shapes (easy-vqa's circle / rectangle / triangle in its 8 pure colours, drawn as
`genrecal.data.shapes` draws them) on a 64x64 pastel background. Every object has its own colour
(so "the red shape" names one object), a size class (small: 9-13 px across, large: 19-25 px) and a
position; objects never overlap. Questions ask for the count, a colour, a shape, a size, a
left/right or above/below relation (only between objects at least `MIN_GAP` px apart on that axis)
and a one-sentence description. Every answer has several phrasings (`PHRASINGS`); the scorer in
`genrecal.data.scenes_scoring` parses any of them, so a model may answer in any of them.

Held-out scenes: the same generator with another seed; `write_scenes(..., seed=...)` is
deterministic in its seed.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from genrecal.data.easy_vqa import check_replaceable
from genrecal.data.shapes import COLORS, SHAPES, SIZE, SUPERSAMPLE, paint
from genrecal.fsutil import atomic_dir

SIZES = {"small": (9, 13), "large": (19, 25)}  # extent in px of each size class
MIN_GAP = 16  # px between object centres on the asked axis of a relation question (a 16-px grid cell)
NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}
KINDS = ("count", "color", "shape", "size", "relation", "describe")
KIND_WEIGHTS = {"count": 1.0, "color": 1.0, "shape": 1.0, "size": 1.0, "relation": 2.0, "describe": 2.0}
"""Question mix (relative weights); relations and descriptions carry the most answer tokens."""


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    x: float
    """Centre, px from the left."""
    y: float
    """Centre, px from the top."""
    extent: int
    """Width in px (a triangle is 0.87 of it high)."""

    def phrase(self) -> str:
        """"small red circle"."""
        return f"{self.size} {self.color} {self.shape}"


# The phrasings of each answer kind: {n} count word, {d} digit, {c} colour, {s} shape, {z} size,
# {o} / {p} the object phrases of a relation, {r} the relation, {list} the described objects.
PHRASINGS = {
    "count": ("{n}", "there are {n} shapes.", "i can see {d} shapes."),
    "color": ("{c}", "it is {c}.", "the {s} is {c}."),
    "shape": ("{s}", "it is a {s}.", "the {c} shape is a {s}."),
    "size": ("{z}", "it is {z}.", "the {c} shape is {z}."),
    "relation": ("{r}", "it is {r} the {p}.", "the {o} is {r} the {p}."),
    "describe": ("{list}.", "there are {n} shapes: {list}.", "the image shows {list}."),
}
RELATION_WORDS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


def sample_scene(rng: random.Random, n_objects: int | None = None) -> list[Obj]:
    """2-5 non-overlapping objects with distinct colours (rejection sampling of positions)."""
    n = n_objects or rng.randint(2, 5)
    colors = rng.sample(list(COLORS), n)
    while True:
        objs = [_place(rng, c) for c in colors]
        if all(_apart(a, b) for i, a in enumerate(objs) for b in objs[i + 1:]):
            return objs


def _place(rng: random.Random, color: str) -> Obj:
    size = rng.choice(list(SIZES))
    extent = rng.randint(*SIZES[size])
    half = extent / 2
    return Obj(rng.choice(SHAPES), color, size, rng.uniform(half + 1, SIZE - half - 1),
               rng.uniform(half + 1, SIZE - half - 1), extent)


def _apart(a: Obj, b: Obj) -> bool:
    """Bounding boxes 2 px apart on at least one axis."""
    reach = (a.extent + b.extent) / 2 + 2
    return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


def draw_scene(objs: list[Obj], rng: random.Random) -> Image.Image:
    """One 64x64 RGB image of the scene; rng picks the background."""
    bg = tuple(rng.randint(230, 255) for _ in range(3))
    im = Image.new("RGB", (SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), bg)
    pen = ImageDraw.Draw(im)
    for o in objs:
        w = o.extent
        h = w if o.shape != "triangle" else round(w * 0.87)
        box = [c * SUPERSAMPLE for c in (o.x - w / 2, o.y - h / 2, o.x + w / 2, o.y + h / 2)]
        paint(pen, o.shape, box, COLORS[o.color])
    return im.resize((SIZE, SIZE), Image.Resampling.BOX)


def left_to_right(objs: list[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: o.x)


def describe(objs: list[Obj]) -> str:
    """"a small red circle, a large blue triangle and a small green rectangle" (left to right)."""
    items = [f"a {o.phrase()}" for o in left_to_right(objs)]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _relation_pairs(objs: list[Obj]) -> list[tuple[Obj, Obj, str]]:
    """(subject, reference, relation) for every ordered pair clear on an axis."""
    out = []
    for a in objs:
        for b in objs:
            if a is b:
                continue
            if abs(a.x - b.x) >= MIN_GAP:
                out.append((a, b, "left" if a.x < b.x else "right"))
            if abs(a.y - b.y) >= MIN_GAP:
                out.append((a, b, "above" if a.y < b.y else "below"))
    return out


def question(objs: list[Obj], rng: random.Random, kind: str | None = None) -> tuple[str, dict]:
    """(question, truth) with truth = {"kind", ...the parsed answer...}; kind None: drawn by KIND_WEIGHTS."""
    kind = kind or rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    o = rng.choice(objs)
    if kind == "count":
        return rng.choice(("how many shapes are there?", "how many shapes are in the image?")), \
            {"kind": kind, "count": len(objs)}
    if kind == "color":
        same = [p for p in objs if (p.size, p.shape) == (o.size, o.shape)]
        if len(same) > 1:  # "the small circle" would name two objects: ask another kind
            return question(objs, rng, "shape")
        return f"what color is the {o.size} {o.shape}?", {"kind": kind, "color": o.color, "shape": o.shape}
    if kind == "shape":
        return rng.choice((f"what shape is the {o.color} one?", f"what is the shape of the {o.color} shape?")), \
            {"kind": kind, "shape": o.shape, "color": o.color}
    if kind == "size":
        return f"is the {o.color} {o.shape} small or large?", {"kind": kind, "size": o.size, "color": o.color}
    if kind == "relation":
        pairs = _relation_pairs(objs)
        if not pairs:  # every pair too close on both axes: ask another kind
            return question(objs, rng, "count")
        a, b, rel = rng.choice(pairs)
        axis = "left or right of" if rel in ("left", "right") else "above or below"
        return f"is the {a.color} {a.shape} {axis} the {b.color} {b.shape}?", \
            {"kind": kind, "relation": rel, "subject": f"{a.color} {a.shape}", "reference": f"{b.color} {b.shape}"}
    return rng.choice(("describe the image in one sentence.", "what is in the image?")), \
        {"kind": "describe", "objects": sorted(o.phrase() for o in objs), "count": len(objs)}


def answer(objs: list[Obj], truth: dict, phrasing: int) -> str:
    """The answer to a question in phrasing number `phrasing` (0: the shortest) of its kind."""
    kind = truth["kind"]
    template = PHRASINGS[kind][phrasing]
    n = truth.get("count", len(objs))
    if kind == "relation":
        return template.format(r=RELATION_WORDS[truth["relation"]], o=truth["subject"], p=truth["reference"])
    return template.format(n=NUMBERS[n], d=n, c=truth.get("color", ""), s=truth.get("shape", ""),
                           z=truth.get("size", ""), list=describe(objs))


def vocabulary_text(scenes: int = 100, seed: int = 12345) -> tuple[str, ...]:
    """Questions and answers (every kind, every phrasing) of `scenes` random scenes, no images drawn:
    corpus lines for a tokenizer that should know the task's words (`genrecal.zoo.build(extra_text=...)`)."""
    rng, lines = random.Random(seed), []
    for _ in range(scenes):
        objs = sample_scene(rng)
        for kind in KINDS:
            q, truth = question(objs, rng, kind)
            lines += [q] + [answer(objs, truth, k) for k in range(len(PHRASINGS[truth["kind"]]))]
    return tuple(lines)


def generate(images: int, questions_per_image: int = 3, seed: int = 0, phrasings: tuple[int, ...] = (0, 1, 2),
             kind_weights: dict | None = None, objects: tuple[int, int] = (2, 5)):
    """Yield (image, objects, [(question, answer, truth), ...]) for `images` scenes (deterministic in seed).

    phrasings: the phrasing numbers answers are drawn from (uniformly); (0,) gives the shortest only;
    objects: the least and most objects per scene (drawn uniformly; the default draws as sample_scene does)."""
    rng = random.Random(seed)
    for _ in range(images):
        objs = sample_scene(rng, rng.randint(*objects))
        im = draw_scene(objs, rng)
        qas, seen = [], set()
        for _ in range(questions_per_image):
            kind = rng.choices(list(kind_weights or KIND_WEIGHTS),
                               weights=list((kind_weights or KIND_WEIGHTS).values()))[0]
            q, truth = question(objs, rng, kind)
            if q not in seen:
                seen.add(q)
                qas.append((q, answer(objs, truth, rng.choice(phrasings)), truth))
        yield im, objs, qas


def write_scenes(out_dir: str | Path, images: int, questions_per_image: int = 3, seed: int = 0,
                 phrasings: tuple[int, ...] = (0, 1, 2), kind_weights: dict | None = None,
                 objects: tuple[int, int] = (2, 5)) -> Path:
    """Write `out_dir/data.json` (LLaVA format, one record per question; each record also holds
    `truth`, the parsed answer, and `objects`, the scene) and `out_dir/images/`; objects: see generate.

    Built in a temporary sibling dir and renamed into place; an existing `out_dir` is replaced only
    if it holds a `data.json`. Returns `out_dir`."""
    out_dir = Path(out_dir).resolve()
    check_replaceable(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        records = []
        scenes = generate(images, questions_per_image, seed, phrasings, kind_weights, objects)
        for i, (im, objs, qas) in enumerate(scenes):
            name = f"images/{i}.png"
            im.save(tmp / name)
            scene = [asdict(o) for o in objs]
            records += [{"id": f"scenes-{seed}-{i}-{k}", "image": name, "truth": truth, "objects": scene,
                         "conversations": [{"from": "human", "value": f"<image>\n{q}"},
                                           {"from": "gpt", "value": a}]}
                        for k, (q, a, truth) in enumerate(qas)]
        (tmp / "data.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return out_dir
