"""How big a TensorRT plan's optimisation profiles may be on a device: limits from the processor,
memory from the device profile.

    sizing = size_plan(onnx_build, graph_dir, facts, get_profile("jetson-orin-nano"))
    sizing.images, sizing.max_prompt, sizing.max_context, sizing.memory   # -> plan.json

The largest image is what the student's own processor makes of a huge image (Qwen2-VL's
max_pixels, Idefics3/SmolVLM's longest_edge and tiles); the prompt holds `images` of those plus
TEXT_TOKENS, the context MAX_NEW_TOKENS more. An estimate of the device memory each engine's
execution context needs at its profile's max shapes (TensorRT allocates a context's activation
memory for the largest of its profiles) is added to the fp16 weights; the plan keeps the largest
image size (the processor's first) and then the most images (MAX_IMAGES down to 1) whose total fits
USABLE_FRACTION of the device's memory. A plan whose smallest setting does not fit is refused.

The estimate is deliberately coarse (no kernel fusion): per profile, one layer's live activations
at the max shapes plus every tensor the graph outputs (fp32: the graphs keep fp32 inputs and outputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genrecal.errors import GenrecalError

MAX_IMAGES = 4
TEXT_TOKENS = 256  # question + chat template around the images
MAX_NEW_TOKENS = 512
USABLE_FRACTION = 0.6  # of a Jetson's unified memory: OS, CUDA context and the CPU side take the rest
IMAGE_SIDES = (4096, 2048, 1536, 1024, 768, 512, 384, 256)  # tried largest first; the processor caps each
FP16, FP32 = 2, 4
SCORE_BYTES = FP16 + 2 * FP32 + FP16  # attention scores fp16 -> softmax in fp32 (the fp16 block list) -> fp16
GIB = 2 ** 30


class PlanSizeError(GenrecalError):
    """A TensorRT plan that cannot fit the device profile's memory."""


@dataclass(frozen=True)
class Dims:
    """Model sizes the estimate needs (text: decoder; vision: the tower)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    v_hidden: int
    v_heads: int
    v_ffn: int
    patch: int

    @classmethod
    def from_config(cls, config) -> "Dims":
        t, v = config.get_text_config(), config.vision_config
        v_hidden = getattr(v, "embed_dim", None) or v.hidden_size
        v_ffn = getattr(v, "intermediate_size", None) or int(v_hidden * v.mlp_ratio)
        heads = t.num_attention_heads
        return cls(layers=t.num_hidden_layers, hidden=t.hidden_size, heads=heads,
                   kv_heads=getattr(t, "num_key_value_heads", None) or heads,
                   head_dim=getattr(t, "head_dim", None) or t.hidden_size // heads, ffn=t.intermediate_size,
                   vocab=t.vocab_size, v_hidden=v_hidden,
                   v_heads=getattr(v, "num_heads", None) or v.num_attention_heads, v_ffn=v_ffn,
                   patch=_side(v.patch_size))


def _side(patch) -> int:
    """A patch size as one side: InternVL's config gives [h, w], the others an int."""
    return int(patch[0] if isinstance(patch, (list, tuple)) else patch)


def attention_groups(pixel_shape: tuple[int, ...], patch: int) -> tuple[int, int]:
    """(groups, tokens per group) of the vision tower's attention for pixel_values of this shape:
    [patches, C*T*p*p] (Qwen2-VL: one dense attention over every patch of every image) or
    [..., 3, H, W] (one attention per image or tile)."""
    if len(pixel_shape) == 2:
        return 1, int(pixel_shape[0])
    return int(np.prod(pixel_shape[:-3])), (pixel_shape[-2] // patch) * (pixel_shape[-1] // patch)


def vision_bytes(d: Dims, groups: int, tokens: int) -> int:
    """One layer's live activations + the attention scores of every group, at fp16."""
    n = groups * tokens
    return n * (6 * d.v_hidden + 2 * d.v_ffn) * FP16 + groups * d.v_heads * tokens * tokens * SCORE_BYTES


def decoder_bytes(d: Dims, seq: int, total: int) -> int:
    """Decoder context at `seq` new tokens over `total` positions: fp32 past + present caches, one
    layer's activations, attention scores and the fp32 logits of every position."""
    cache = 2 * d.layers * d.kv_heads * d.head_dim * FP32
    layer = seq * (6 * d.hidden + 3 * d.ffn) * FP16 + d.heads * seq * total * SCORE_BYTES
    return cache * ((total - seq) + total) + layer + seq * d.vocab * (FP16 + FP32)


@dataclass
class Sizing:
    """The chosen limits and the memory estimate behind them (bytes; GiB in `memory`)."""

    device: str
    budget: int
    weights: int
    images: int
    image_side: int
    image_tokens: int  # prompt tokens of one largest image (with the short question)
    max_prompt: int
    max_context: int
    profiles: dict[str, int] = field(default_factory=dict)  # "graph/profile" -> activation bytes

    @property
    def total(self) -> int:
        ctx = {}
        for key, nbytes in self.profiles.items():  # one context per engine, sized for its largest profile
            graph = key.split("/")[0]
            ctx[graph] = max(ctx.get(graph, 0), nbytes)
        return self.weights + sum(ctx.values())

    def memory(self) -> dict:
        gib = {k: round(v / GIB, 3) for k, v in self.profiles.items()}
        return {"device": self.device, "budget_gib": round(self.budget / GIB, 2),
                "usable_fraction": USABLE_FRACTION, "weights_gib": round(self.weights / GIB, 3),
                "activation_gib": gib, "total_gib": round(self.total / GIB, 3),
                "image_side": self.image_side, "note": "estimate: max shapes, no kernel fusion"}


def estimate(d: Dims, pixel_shape: tuple[int, ...], images: int, image_tokens: int, weights: int,
             budget: int, device: str, side: int) -> Sizing:
    """The Sizing of a plan with `images` images of `pixel_shape` (one image's pixel_values)."""
    groups, tokens = attention_groups(pixel_shape, d.patch)
    if len(pixel_shape) == 2:  # dense: n images make one attention n times as long
        groups, tokens = 1, tokens * images
    else:
        groups *= images
    max_prompt = images * image_tokens + TEXT_TOKENS
    max_context = max_prompt + MAX_NEW_TOKENS
    profiles = {"vision/default": vision_bytes(d, groups, tokens),
                "embed/default": max_context * d.hidden * (FP16 + FP32),
                "decoder/prefill": decoder_bytes(d, max_prompt, max_prompt),
                "decoder/decode": decoder_bytes(d, 1, max_context)}
    return Sizing(device, budget, weights, images, side, image_tokens, max_prompt, max_context, profiles)


def choose(d: Dims, per_side: list[tuple[int, tuple[int, ...], int]], weights: int, budget: int,
           device: str) -> Sizing:
    """The first (largest image, then most images) setting that fits `budget`; `per_side` holds
    (side, one image's pixel_values shape, its prompt tokens), largest first. Raises PlanSizeError."""
    smallest = None
    for side, shape, tokens in per_side:
        for images in range(MAX_IMAGES, 0, -1):
            sizing = estimate(d, shape, images, tokens, weights, budget, device, side)
            if sizing.total <= budget:
                return sizing
            smallest = sizing
    raise PlanSizeError(
        f"the TensorRT plan cannot fit {device}: even 1 image at {smallest.image_side} px needs "
        f"~{smallest.total / GIB:.1f} GiB (fp16 weights {weights / GIB:.1f} GiB + activations) > "
        f"{budget / GIB:.1f} GiB usable ({USABLE_FRACTION:.0%} of its memory); pick a device profile with "
        "more memory (--device-profile) or a smaller student")
