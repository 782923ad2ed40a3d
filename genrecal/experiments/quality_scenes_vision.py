"""The scenes benchmark's vision probe task: what a linear probe reads off all of an encoder's image tokens.

    pretrain_vision(model_dir, out_dir, steps=800, task=SCENE_TASK)   # genrecal.experiments.vision_pretrain

Labels per rendered scene (genrecal.data.scenes), on a 4 x 4 grid of 16-px cells:
- count: 2..5 (4 classes);
- per cell: the shape (3 + none), colour (8 + none) and size (2 + none) of the object centred in it;
- per colour: the column and the row of the cell its object is centred in (4 + absent each).
Relation questions only ask about objects >= `scenes.MIN_GAP` (16) px apart on the axis, so their
cells differ there and the position probes decide every asked relation. The probe is one linear map of
the flattened image tokens ([n, tokens x hidden]), so it can read where things are. `probe_accuracy`:
count; shape, colour, size over cells holding exactly one object centre; relation over every ordered
pair of a scene that a relation question may ask (right when both predicted cells order it strictly).
The regime criterion is >= 85 % for each.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from genrecal.experiments.vision_pretrain import ProbeTask
from genrecal.data import scenes
from genrecal.data.shapes import COLORS, SHAPES

GRID, CELL = 4, 16
HEADS = {"count": (1, 4), "shape": (GRID * GRID, len(SHAPES) + 1), "color": (GRID * GRID, len(COLORS) + 1),
         "size": (GRID * GRID, 3), "column": (len(COLORS), GRID + 1), "row": (len(COLORS), GRID + 1)}
"""attribute -> (positions, classes per position); the last class is 'none' / 'absent'."""


def _cell(o: scenes.Obj) -> tuple[int, int]:
    """(column, row) of the grid cell holding the object's centre."""
    return min(GRID - 1, int(o.x // CELL)), min(GRID - 1, int(o.y // CELL))


def labels(objs: list[scenes.Obj]) -> dict[str, list[int]]:
    """Class ids per attribute and position (see HEADS); `crowded` marks cells with > 1 object centre."""
    out = {"count": [len(objs) - 2], "shape": [len(SHAPES)] * GRID ** 2, "color": [len(COLORS)] * GRID ** 2,
           "size": [2] * GRID ** 2, "column": [GRID] * len(COLORS), "row": [GRID] * len(COLORS),
           "crowded": [0] * GRID ** 2}
    for o in objs:
        col, row = _cell(o)
        k, c = row * GRID + col, list(COLORS).index(o.color)
        out["crowded"][k] += out["shape"][k] != len(SHAPES)
        out["shape"][k], out["color"][k], out["size"][k] = SHAPES.index(o.shape), c, list(scenes.SIZES).index(o.size)
        out["column"][c], out["row"][c] = col, row
    return out


def _batch(processor, rng: random.Random, n: int):
    images, rows, scenes_ = [], [], []
    for _ in range(n):
        objs = scenes.sample_scene(rng)
        images.append(scenes.draw_scene(objs, rng))
        rows.append(labels(objs))
        scenes_.append(objs)
    inputs = processor.image_processor(images=[[im] for im in images], return_tensors="pt")
    y = {k: torch.tensor([r[k] for r in rows]) for k in (*HEADS, "crowded")}
    y["pairs"] = [_asked_pairs(objs) for objs in scenes_]
    return dict(inputs), y


def _asked_pairs(objs: list[scenes.Obj]) -> list[tuple[int, int, str]]:
    """(colour id a, colour id b, axis) for every ordered pair a relation question may ask, a before b."""
    ids = {o.color: list(COLORS).index(o.color) for o in objs}
    out = []
    for a in objs:
        for b in objs:
            if abs(a.x - b.x) >= scenes.MIN_GAP and a.x < b.x:
                out.append((ids[a.color], ids[b.color], "column"))
            if abs(a.y - b.y) >= scenes.MIN_GAP and a.y < b.y:
                out.append((ids[a.color], ids[b.color], "row"))
    return out


def token_features(model: nn.Module, inputs: dict) -> torch.Tensor:
    """[n_images, tokens x hidden]: the model's projected image tokens, flattened per image."""
    from genrecal.experiments.vision_pretrain import image_tokens

    return torch.stack([t.reshape(-1) for t in image_tokens(model, inputs)])


def _split(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """[n, total] -> attribute -> [n, positions, classes]."""
    out, at = {}, 0
    for name, (pos, cls) in HEADS.items():
        out[name] = logits[:, at:at + pos * cls].reshape(-1, pos, cls)
        at += pos * cls
    return out


def _loss(logits: torch.Tensor, y: dict) -> torch.Tensor:
    parts = _split(logits)
    return sum(nn.functional.cross_entropy(parts[k].flatten(0, 1), y[k].flatten()) for k in HEADS)


def _accuracy(logits: torch.Tensor, y: dict) -> dict:
    pred = {k: v.argmax(-1) for k, v in _split(logits).items()}
    out = {"count": (pred["count"] == y["count"]).float().mean().item()}
    single = (y["shape"] != len(SHAPES)) & (y["crowded"] == 0)
    for k in ("shape", "color", "size"):
        out[k] = (pred[k] == y[k])[single].float().mean().item()
    hits = [bool(pred[axis][i, a] < pred[axis][i, b] < GRID) for i, pairs in enumerate(y["pairs"])
            for a, b, axis in pairs]
    out["relation"] = sum(hits) / max(1, len(hits))
    return {k: round(v, 4) for k, v in out.items()}


SCENE_TASK = ProbeTask(sum(p * c for p, c in HEADS.values()), _batch, token_features, _loss, _accuracy)
