"""Idefics3 and SmolVLM -> GGUF: text arch `llama` + mmproj `idefics3` (SigLIP tower, pixel shuffle,
one linear projection `mm.model.fc`).

Text: llama.cpp's `llama` arch rotates interleaved pairs, HF rotates halves, so q/k rows are permuted
(see writer.rope_permute). Vision: SigLIP's LayerNorm/attention/MLP map one-to-one; the vision MLP
is tanh-GELU (`clip.use_gelu`). With HF image splitting off (the zoo's setting) llama.cpp encodes one
overview image of image_size x image_size; with it on, `clip.vision.preproc_image_size` makes
llama.cpp tile like HF (written, but only the non-split path is covered by tests).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from gguf.constants import MODEL_TENSOR, VisionProjectorType

from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.mmproj import VisionSpec
from genrecal.export.gguf.writer import add_decoder_keys, decoder_tensors, tensor_name
from genrecal.gguf_pair.prompt import PromptFormat

TEXT_ARCH = "llama"
PROJECTOR_TYPE = VisionProjectorType.IDEFICS3  # "idefics3"
IMAGE_PLACEHOLDER = "<image>"  # the chat template's image part; libmtmd adds the fake/global tokens

_LAYER = {  # HF suffix inside vision_model.encoder.layers.{i} -> gguf tensor
    "layer_norm1": MODEL_TENSOR.V_ENC_INPUT_NORM,
    "layer_norm2": MODEL_TENSOR.V_ENC_POST_ATTN_NORM,
    "self_attn.q_proj": MODEL_TENSOR.V_ENC_ATTN_Q,
    "self_attn.k_proj": MODEL_TENSOR.V_ENC_ATTN_K,
    "self_attn.v_proj": MODEL_TENSOR.V_ENC_ATTN_V,
    "self_attn.out_proj": MODEL_TENSOR.V_ENC_ATTN_O,
    "mlp.fc1": MODEL_TENSOR.V_ENC_FFN_UP,
    "mlp.fc2": MODEL_TENSOR.V_ENC_FFN_DOWN,
}
_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def add_text_keys(w, model, n_vocab: int) -> None:
    add_decoder_keys(w, model.config.get_text_config(), n_vocab)


def text_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    return decoder_tensors(model, permute_qk=True)


def _np(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def vision_tensors(model) -> Iterator[tuple[str, np.ndarray]]:
    vision = model.model.vision_model
    emb = vision.embeddings
    yield "v.patch_embd.weight", _np(emb.patch_embedding.weight)  # [embed, 3, p, p]
    yield "v.patch_embd.bias", _np(emb.patch_embedding.bias)
    yield "v.position_embd.weight", _np(emb.position_embedding.weight)  # [n_patches, embed]
    for name, param in vision.encoder.layers.named_parameters():
        bid, rest = name.split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module not in _LAYER:
            raise GgufExportError(f"vision tensor encoder.layers.{name} has no llama.cpp counterpart")
        yield tensor_name(_LAYER[module], kind, bid), _np(param)
    yield "v.post_ln.weight", _np(vision.post_layernorm.weight)
    yield "v.post_ln.bias", _np(vision.post_layernorm.bias)
    proj = model.model.connector.modality_projection.proj
    if getattr(proj, "bias", None) is not None:
        raise GgufExportError("Idefics3 connector with a bias: llama.cpp's idefics3 projector has none")
    yield "mm.model.fc.weight", _np(proj.weight)  # [text hidden, embed * scale^2]


def vision_spec(model, image_processor) -> VisionSpec:
    vcfg = model.config.vision_config
    if vcfg.hidden_act not in _TANH_GELU:
        raise GgufExportError(f"Idefics3 vision hidden_act {vcfg.hidden_act!r}: llama.cpp runs tanh-GELU here")
    splitting = bool(getattr(image_processor, "do_image_splitting", False))
    return VisionSpec(
        projector_type=PROJECTOR_TYPE,
        embedding_length=vcfg.hidden_size,
        feed_forward_length=vcfg.intermediate_size,
        block_count=vcfg.num_hidden_layers,
        head_count=vcfg.num_attention_heads,
        layer_norm_eps=float(vcfg.layer_norm_eps),
        image_size=vcfg.image_size,
        patch_size=vcfg.patch_size,
        projection_dim=model.config.get_text_config().hidden_size,
        image_mean=tuple(image_processor.image_mean),
        image_std=tuple(image_processor.image_std),
        use_gelu=True,
        scale_factor=model.config.scale_factor,
        preproc_image_size=image_processor.size["longest_edge"] if splitting else None,
    )


def notes(model, tokenizer) -> list[str]:
    """Known limits of other llama.cpp front-ends with this pair, recorded in the manifest."""
    if "ĊĊ" in tokenizer.get_vocab():  # byte-level spelling of "\n\n"
        return []
    return ["llama-cpp-python's MTMDChatHandler cannot run this pair: libmtmd puts a '\\n\\n' token before "
            "Idefics3 images and this vocabulary has none (llama_decode fails on the missing id); genrecal's "
            "LlamaCppRuntime lays the prompt out like the HF processor instead"]


def prompt_format(image_processor) -> PromptFormat:
    """Splitting off: HF resizes the longest edge to size["longest_edge"], squashes the result to
    max_image_size square and writes
    `<fake_token_around_image><global-img>` + image tokens + `<fake_token_around_image>`. libmtmd's
    Idefics3 path would add a tile (and a "\\n\\n" token) even for an image that needs none, so the
    layout is genrecal's. Splitting on: libmtmd tiles like HF (not covered by tests)."""
    if getattr(image_processor, "do_image_splitting", False):
        return PromptFormat(placeholder=IMAGE_PLACEHOLDER)
    rule = {"mode": "square", "longest_edge": image_processor.size["longest_edge"],
            "size": image_processor.max_image_size["longest_edge"], "resample": int(image_processor.resample)}
    layout = {"mode": "overview", "before": "<fake_token_around_image><global-img>",
              "after": "<fake_token_around_image>"}
    return PromptFormat(placeholder=IMAGE_PLACEHOLDER, image_rule=rule, image_layout=layout)
