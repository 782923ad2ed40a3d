"""What a family tells GGUF export (its route to llama.cpp), and the tensor-map pieces families share.

A family reaches llama.cpp's GGUF pair (model.gguf + mmproj.gguf) one of two ways, declared in its
`GgufRoute`:
    tensors=GgufTensorMap(...)     genrecal's own writer: the family maps its tensors and keys itself
    converter=ConverterRoute(...)  llama.cpp's own converter (convert_hf_to_gguf.py) from the transformers
                                   dir, or a copy staged the way the converter reads it
genrecal.export.gguf reads these fields and nothing else of the family. Tensor names come from gguf-py's
tables (`gguf.TENSOR_NAMES`). Shapes: numpy arrays are row-major [out, in]; GGUFWriter stores them
reversed (ggml's ne = [in, out]). Imports gguf-py and numpy, never genrecal's export code.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import gguf
import numpy as np
from gguf.constants import MODEL_TENSOR, TENSOR_NAMES

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import PromptFormat
from genrecal.families.model_access import text_model

Tensors = Iterator[tuple[str, np.ndarray]]  # (gguf tensor name, array)


@dataclass(frozen=True)
class GgufTensorMap:
    """genrecal's own writer: the family's hyper-parameters and tensors under llama.cpp's names."""

    add_text_keys: Callable[[gguf.GGUFWriter, Any, int], None]
    """(writer, model, n_vocab): the `{arch}.*` keys of model.gguf."""
    text_tensors: Callable[[Any], Tensors]
    """model -> the LLM body and head."""
    vision_spec: Callable[[Any, Any], "VisionSpec"]
    """(model, image_processor) -> the clip.vision.* hyper-parameters of mmproj.gguf."""
    vision_tensors: Callable[[Any], Tensors]
    """model -> the vision tower + projector (v.*, mm.*)."""


@dataclass(frozen=True)
class ConverterRoute:
    """llama.cpp's own converter writes the pair (it ships in the llama-cpp-python sdist)."""

    check: Callable[[Path], None] | None = None
    """hf_dir -> raises GgufExportError for a model the converter cannot convert (before it runs)."""
    stage: Callable[[Path, Path], Path] | None = None
    """(hf_dir, scratch) -> a dir the converter reads (checks and renames); None: hf_dir as it is."""
    pre_tokenizer: str = "required"
    """"required": pass llama.cpp's pre-tokenizer name from tokenizer.json as a fallback for hashes the
    converter does not know; "optional": the same where tokenizer.json has one; "none": never."""
    mmproj: str = "converter"
    """"converter": convert_hf_to_gguf.py --mmproj; "llava_legacy": llama.cpp's legacy LLaVA scripts."""
    mmproj_stage: Callable[[Path, Path], tuple[Path, Path]] | None = None
    """llava_legacy only: (hf_dir, scratch) -> (checkpoint dir for the surgery, vision config dir)."""
    text_flags: tuple[str, ...] = ()
    """Extra convert_hf_to_gguf.py flags for the text model only (the mmproj run refuses some of them), e.g.
    qwen3_5's "--no-mtp": a transformers student carries no multi-token-prediction head."""


@dataclass(frozen=True)
class GgufRoute:
    """One family's route to a llama.cpp GGUF pair; exactly one of `tensors` / `converter` is set."""

    text_arch: str
    """general.architecture of model.gguf, e.g. "qwen2vl", "llama"."""
    projector_type: str
    """clip.projector_type of mmproj.gguf, e.g. "qwen2vl_merger", "idefics3"."""
    image_placeholder: str
    """What the chat template renders for one image part (libmtmd's media marker replaces it)."""
    prompt_format: Callable[[Any], PromptFormat]
    """image_processor -> the prompt/image rule the llama.cpp runtime replays."""
    notes: Callable[[Any, Any], list[str]] = lambda model, tokenizer: []
    """(model, tokenizer) -> measured differences from PyTorch, recorded in the manifest."""
    tensors: GgufTensorMap | None = None
    converter: ConverterRoute | None = None
    runtime_text_rms_eps: float | None = None
    """RMSNorm eps llama.cpp really uses for the text model when it ignores the file's (qwen2vl: 0)."""
    runtime_model: Callable[[Any], Any] | None = None
    """model -> PyTorch computing llama.cpp's graph where no tensor layout can match the HF model."""
    runtime_graph: str | None = None
    """What runtime_model reproduces (recorded in the parity record)."""
    logit_tol: dict | None = None
    """Conversion logit tolerance per precision ("f32", "f16") where the default does not hold (why in `notes`): the
    fixed part of the bound, genrecal.export.gguf.parity.LOGIT_TOL (it grows with the logits above that)."""
    embed_rel_tol: float | None = None
    """Image-embedding tolerance relative to max |embedding| where the default does not hold."""
    libmtmd_lookups: tuple[str, ...] = ()
    """Strings llama.cpp's libmtmd looks up as one vocabulary token each for this projector (`lookup_token`
    in tools/mtmd/mtmd.cpp); export refuses a tokenizer without one of them (libmtmd would put token -1 in
    the prompt: llama-mtmd-cli aborts, llama-cpp-python's MTMDChatHandler fails to decode)."""
    zoo_size: str = "tiny"
    """The smallest zoo size this route converts (llama.cpp's converter maps some projector tensors through
    its vision block table, so it needs a few vision blocks); tests and the registry walk build it."""
    zoo_vocab: str | None = None
    """llama.cpp vocab-only GGUF (models/ggml-vocab-*.gguf in its source) the zoo model must use: the
    converter needs a tokenizer whose pre-tokenizer it knows."""

    def __post_init__(self):
        if (self.tensors is None) == (self.converter is None):
            raise ValueError(f"GgufRoute({self.text_arch}): set exactly one of tensors= / converter=")


@dataclass(frozen=True)
class VisionSpec:
    """The clip.vision.* hyper-parameters of one vision tower + projector."""

    projector_type: str  # llama.cpp projector name, e.g. "qwen2vl_merger", "idefics3"
    embedding_length: int  # vision hidden width
    feed_forward_length: int  # vision MLP width (must differ from embedding_length, see check())
    block_count: int
    head_count: int
    layer_norm_eps: float
    image_size: int  # nominal square side in pixels
    patch_size: int
    projection_dim: int  # width of the projector's output = the text model's hidden size
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    use_gelu: bool = False  # tanh-GELU vision MLP; False -> quick-GELU (llama.cpp's default)
    spatial_merge_size: int | None = None  # Qwen2-VL merger
    scale_factor: int | None = None  # Idefics3 pixel shuffle
    preproc_image_size: int | None = None  # Idefics3 image splitting (tiles of image_size)
    min_pixels: int | None = None
    max_pixels: int | None = None

    def check(self) -> None:
        if self.feed_forward_length == self.embedding_length:
            # clip.cpp decides whether ffn up/down were stored swapped (legacy files) by comparing
            # ffn_down's width with the embedding width; equal widths make it swap them wrongly.
            raise GgufExportError(
                f"vision MLP width == vision width ({self.embedding_length}): llama.cpp's clip loader "
                "would treat ffn_up/ffn_down as swapped and compute garbage; use an MLP ratio != 1")



# ---- the decoder stack (Llama / Qwen2 layout in transformers 5) -> llama.cpp names ----
_LAYER = {  # HF suffix inside layers.{i} -> gguf tensor
    "input_layernorm": MODEL_TENSOR.ATTN_NORM,
    "self_attn.q_proj": MODEL_TENSOR.ATTN_Q,
    "self_attn.k_proj": MODEL_TENSOR.ATTN_K,
    "self_attn.v_proj": MODEL_TENSOR.ATTN_V,
    "self_attn.o_proj": MODEL_TENSOR.ATTN_OUT,
    "post_attention_layernorm": MODEL_TENSOR.FFN_NORM,
    "mlp.gate_proj": MODEL_TENSOR.FFN_GATE,
    "mlp.up_proj": MODEL_TENSOR.FFN_UP,
    "mlp.down_proj": MODEL_TENSOR.FFN_DOWN,
}


def tensor_name(tensor: MODEL_TENSOR, kind: str = "weight", bid: int | str | None = None) -> str:
    """gguf-py's name for `tensor`, e.g. (ATTN_Q, "bias", 0) -> "blk.0.attn_q.bias"."""
    base = TENSOR_NAMES[tensor]
    return f"{base.format(bid=bid) if bid is not None else base}.{kind}"


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half RoPE layout to llama.cpp's interleaved-pair layout.

    Per head, HF rotates (x[i], x[i + d/2]); llama.cpp's `llama` arch rotates (x[2i], x[2i+1]).
    Rows [n_head * d] (+ any trailing dims) -> [n_head, 2, d/2] -> swap the last two -> back.
    """
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def to_numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def decoder_tensors(model, permute_qk: bool) -> Iterator[tuple[str, np.ndarray]]:
    """(gguf name, array) for the LLM body and head of a VLM; q/k permuted for llama's RoPE."""
    cfg = model.config.get_text_config()
    body = text_model(model)
    embed = body.embed_tokens.weight
    yield tensor_name(MODEL_TENSOR.TOKEN_EMBD), to_numpy(embed)
    for name, param in body.layers.named_parameters():
        bid, rest = name.split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module not in _LAYER:
            raise GgufExportError(f"decoder tensor layers.{name} has no llama.cpp counterpart in this writer")
        arr = to_numpy(param)
        if permute_qk and _LAYER[module] == MODEL_TENSOR.ATTN_Q:
            arr = rope_permute(arr, cfg.num_attention_heads)
        elif permute_qk and _LAYER[module] == MODEL_TENSOR.ATTN_K:
            arr = rope_permute(arr, cfg.num_key_value_heads)
        yield tensor_name(_LAYER[module], kind, bid), arr
    yield tensor_name(MODEL_TENSOR.OUTPUT_NORM), to_numpy(body.norm.weight)
    head = model.get_output_embeddings().weight
    if head.data_ptr() != embed.data_ptr():  # tied heads are read from token_embd by llama.cpp
        yield tensor_name(MODEL_TENSOR.OUTPUT), to_numpy(head)


def rope_theta(cfg) -> float:
    params = getattr(cfg, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise GgufExportError(f"rope_type {rope_type!r} is not written by this exporter (only 'default')")
    return float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))


def add_decoder_keys(w: gguf.GGUFWriter, cfg, n_vocab: int) -> None:
    """The `{arch}.*` hyper-parameters every llama.cpp decoder reads."""
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise GgufExportError(f"text hidden_act {cfg.hidden_act!r} is not supported (llama.cpp expects silu)")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_rope_freq_base(rope_theta(cfg))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(n_vocab)
