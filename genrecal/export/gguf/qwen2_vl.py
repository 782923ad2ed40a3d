"""Qwen2-VL -> GGUF: text arch `qwen2vl` (Qwen2 body with M-RoPE) + mmproj `qwen2vl_merger`.

Text: no q/k permutation (llama.cpp's qwen2vl uses the same rotate-half RoPE as HF); the three
M-RoPE sections (temporal, height, width) go to `qwen2vl.rope.dimension_sections`, padded to 4.
Vision: the Conv3d patch embedding [embed, 3, t=2, p, p] is split on its temporal axis into
`v.patch_embd.weight` and `v.patch_embd.weight.1` (llama.cpp runs two Conv2d and adds them, which
is the same sum for a still image repeated over both frames); the fused qkv is split into q, k, v;
the merger's LayerNorm becomes `v.post_ln` and its MLP `mm.0` / `mm.2`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from gguf.constants import MODEL_TENSOR, VisionProjectorType

from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.mmproj import VisionSpec
from genrecal.export.gguf.writer import add_decoder_keys, decoder_tensors, tensor_name
from genrecal.gguf_pair.prompt import PromptFormat

TEXT_ARCH = "qwen2vl"
PROJECTOR_TYPE = VisionProjectorType.QWEN2VL  # "qwen2vl_merger"
# what the chat template renders for one image part; libmtmd writes vision_start/end itself
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
# llama.cpp (llama-cpp-python 0.3.36) runs qwen2vl's text RMSNorms with eps 0 whatever the file says
# (see notes()). Parity is checked against PyTorch run with that eps, so the conversion itself is held to
# the default tolerance; the difference from the original eps is measured and recorded beside it.
RUNTIME_TEXT_RMS_EPS = 0.0

_BLOCK = {  # HF suffix inside visual.blocks.{i} -> gguf tensor (qkv handled separately)
    "norm1": MODEL_TENSOR.V_ENC_INPUT_NORM,
    "norm2": MODEL_TENSOR.V_ENC_POST_ATTN_NORM,
    "attn.proj": MODEL_TENSOR.V_ENC_ATTN_O,
    "mlp.fc1": MODEL_TENSOR.V_ENC_FFN_UP,
    "mlp.fc2": MODEL_TENSOR.V_ENC_FFN_DOWN,
}
_QKV = (MODEL_TENSOR.V_ENC_ATTN_Q, MODEL_TENSOR.V_ENC_ATTN_K, MODEL_TENSOR.V_ENC_ATTN_V)
_MERGER = {"ln_q": "v.post_ln", "mlp.0": "mm.0", "mlp.2": "mm.2"}  # merger LayerNorm, MLP in/out


def add_text_keys(w, model, n_vocab: int) -> None:
    cfg = model.config.get_text_config()
    add_decoder_keys(w, cfg, n_vocab)
    sections = list(cfg.rope_parameters.get("mrope_section") or [])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if not sections or sum(sections) * 2 != head_dim or len(sections) > 4:
        raise GgufExportError(f"mrope_section {sections} must have <= 4 parts summing to head_dim/2 = {head_dim // 2}")
    w.add_rope_dimension_sections(sections + [0] * (4 - len(sections)))


def text_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    return decoder_tensors(model, permute_qk=False)


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def vision_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    visual = model.model.visual
    patch = _np(visual.patch_embed.proj.weight)  # [embed, 3, t, p, p]
    if patch.ndim != 5 or patch.shape[2] != 2:
        raise GgufExportError(f"expected a Conv3d patch embedding with temporal size 2, got {patch.shape}")
    yield "v.patch_embd.weight", patch[:, :, 0]
    yield "v.patch_embd.weight.1", patch[:, :, 1]
    for name, param in visual.blocks.named_parameters():
        bid, rest = name.split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module == "attn.qkv":  # rows [3 * embed]: q, then k, then v
            for tensor, part in zip(_QKV, np.split(_np(param), 3, axis=0)):
                yield tensor_name(tensor, kind, bid), part
        elif module in _BLOCK:
            yield tensor_name(_BLOCK[module], kind, bid), _np(param)
        else:
            raise GgufExportError(f"vision tensor visual.blocks.{name} has no llama.cpp counterpart")
    for name, param in visual.merger.named_parameters():
        module, kind = name.rsplit(".", 1)
        if module not in _MERGER:
            raise GgufExportError(f"merger tensor visual.merger.{name} has no llama.cpp counterpart")
        yield f"{_MERGER[module]}.{kind}", _np(param)


def vision_spec(model, image_processor) -> VisionSpec:
    vcfg = model.config.vision_config
    fc1 = model.model.visual.blocks[0].mlp.fc1.weight  # [mlp width, embed]
    size = image_processor.size
    if getattr(vcfg, "hidden_act", "quick_gelu") != "quick_gelu":
        raise GgufExportError(f"Qwen2-VL vision hidden_act {vcfg.hidden_act!r}: llama.cpp runs quick_gelu")
    return VisionSpec(
        projector_type=PROJECTOR_TYPE,
        embedding_length=vcfg.embed_dim,
        feed_forward_length=int(fc1.shape[0]),
        block_count=vcfg.depth,
        head_count=vcfg.num_heads,
        layer_norm_eps=1e-6,  # nn.LayerNorm(eps=1e-6) in Qwen2-VL's vision blocks and merger
        image_size=int(round(size["longest_edge"] ** 0.5)),
        patch_size=vcfg.patch_size,
        projection_dim=model.config.get_text_config().hidden_size,
        image_mean=tuple(image_processor.image_mean),
        image_std=tuple(image_processor.image_std),
        spatial_merge_size=vcfg.spatial_merge_size,
        min_pixels=size["shortest_edge"],
        max_pixels=size["longest_edge"],
    )


def notes(model, tokenizer) -> list[str]:
    """Known, measured differences from PyTorch, recorded in the manifest."""
    eps = model.config.get_text_config().rms_norm_eps
    return [f"llama.cpp in llama-cpp-python 0.3.36 loads qwen2vl with RMSNorm eps 0 (it ignores "
            f"qwen2vl.attention.layer_norm_rms_epsilon = {eps:g}): negligible when hidden-state mean squares "
            f">> {eps:g}; on the tiny test models (hidden 256) it moves logits by 5e-3..1.1e-2"]


def prompt_format(image_processor) -> PromptFormat:
    """Qwen2-VL's smart resize (sides multiples of patch*merge, pixels within [min, max]); libmtmd
    writes <|vision_start|> / <|vision_end|> around the image itself."""
    size = image_processor.size
    rule = {"mode": "qwen2vl", "factor": image_processor.patch_size * image_processor.merge_size,
            "min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"],
            "resample": int(image_processor.resample)}
    return PromptFormat(placeholder=IMAGE_PLACEHOLDER, image_rule=rule)
