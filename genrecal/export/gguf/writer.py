"""Writing tensors into a GGUF file at a chosen precision, and the decoder-stack tensor map that both
text architectures (llama.cpp's `llama` and `qwen2vl`) share.

Tensor names come from gguf-py's own tables (`gguf.TENSOR_NAMES`), so they are defined once, by the
package llama.cpp itself uses. Shapes: numpy arrays are row-major [out, in]; GGUFWriter stores them
reversed (ggml's ne = [in, out]), so "row length" below is the last numpy axis.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import gguf
import numpy as np
from gguf.constants import MODEL_TENSOR, TENSOR_NAMES

from genrecal.export.gguf.layout import GgufExportError
from genrecal.families.base import text_model

Q = gguf.GGMLQuantizationType
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}
_WEIGHT_TYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}


class TensorWriter:
    """One GGUF file: metadata through `.gguf` (a GGUFWriter), tensors through `add` at `precision`.

    Policy (as llama.cpp's own converter): 1-D tensors (norms, biases) and names in `keep_f32` stay
    F32; other weights take the precision's type. A Q8_0 row must be a multiple of 32 elements; a
    weight that is not falls back to F16 and is listed in `fallbacks`.
    """

    def __init__(self, path: Path, arch: str, precision: str, keep_f32: Iterable[str] = ()):
        if precision not in _WEIGHT_TYPES:
            raise GgufExportError(f"cannot write precision {precision!r} directly; use one of {sorted(_WEIGHT_TYPES)}")
        self.path = Path(path)
        self.precision = precision
        self.keep_f32 = set(keep_f32)
        self.gguf = gguf.GGUFWriter(str(path), arch)
        self.gguf.add_file_type(int(FILE_TYPES[precision]))
        self.types: Counter[str] = Counter()
        self.fallbacks: list[str] = []
        self.names: list[str] = []

    def add(self, name: str, array) -> None:
        arr = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
        qtype = self._type_for(name, arr)
        if qtype == Q.F32:
            self.gguf.add_tensor(name, arr)
        elif qtype == Q.F16:
            self.gguf.add_tensor(name, arr.astype(np.float16))
        else:
            self.gguf.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        self.types[qtype.name] += 1
        self.names.append(name)

    def _type_for(self, name: str, arr: np.ndarray) -> Q:
        if arr.ndim < 2 or name in self.keep_f32:
            return Q.F32
        qtype = _WEIGHT_TYPES[self.precision]
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if arr.shape[-1] % block:
            self.fallbacks.append(f"{name} (row {arr.shape[-1]} not a multiple of {block}: F16)")
            return Q.F16
        return qtype

    def finish(self) -> None:
        """Header, metadata, tensor infos and data, in GGUFWriter's required order; closes the file."""
        w = self.gguf
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


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


def _numpy(t) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def decoder_tensors(model, permute_qk: bool) -> Iterator[tuple[str, np.ndarray]]:
    """(gguf name, array) for the LLM body and head of a VLM; q/k permuted for llama's RoPE."""
    cfg = model.config.get_text_config()
    body = text_model(model)
    embed = body.embed_tokens.weight
    yield tensor_name(MODEL_TENSOR.TOKEN_EMBD), _numpy(embed)
    for name, param in body.layers.named_parameters():
        bid, rest = name.split(".", 1)
        module, kind = rest.rsplit(".", 1)
        if module not in _LAYER:
            raise GgufExportError(f"decoder tensor layers.{name} has no llama.cpp counterpart in this writer")
        arr = _numpy(param)
        if permute_qk and _LAYER[module] == MODEL_TENSOR.ATTN_Q:
            arr = rope_permute(arr, cfg.num_attention_heads)
        elif permute_qk and _LAYER[module] == MODEL_TENSOR.ATTN_K:
            arr = rope_permute(arr, cfg.num_key_value_heads)
        yield tensor_name(_LAYER[module], kind, bid), arr
    yield tensor_name(MODEL_TENSOR.OUTPUT_NORM), _numpy(body.norm.weight)
    head = model.get_output_embeddings().weight
    if head.data_ptr() != embed.data_ptr():  # tied heads are read from token_embd by llama.cpp
        yield tensor_name(MODEL_TENSOR.OUTPUT), _numpy(head)


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
