"""Check a model.gguf + mmproj.gguf pair against what llama.cpp will read, BEFORE llama.cpp reads it.

llama.cpp's clip loader treats most vision tensors as optional and then dereferences them while
building the graph: a missing `v.blk.0.attn_q.weight` or `v.patch_embd.weight.1` is a segfault, and
a missing image_mean is an abort — neither can be caught from Python. So every key and tensor the
graph for the file's projector type uses is checked here with gguf-py's reader, without torch.

    python -m genrecal.artifacts.gguf_pair.validate out/model.gguf out/mmproj.gguf
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFReader

from genrecal.artifacts.gguf_pair.layout import GgufValidationError

_VISION_BLOCK = [f"{t}.{k}" for t in ("ln1", "ln2", "attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down")
                 for k in ("weight", "bias")]
# Qwen2.5-VL's vision blocks: RMSNorm (no bias) and a SwiGLU MLP with biases
_SWIGLU_BLOCK = ["ln1.weight", "ln2.weight"] + [f"{t}.{k}" for t in ("attn_q", "attn_k", "attn_v", "attn_out",
                                                                      "ffn_gate", "ffn_up", "ffn_down")
                                                 for k in ("weight", "bias")]
# projector type -> (global tensors, per-block tensors) its clip.cpp graph dereferences
VISION_TENSORS = {
    "qwen2.5vl_merger": (["v.patch_embd.weight", "v.patch_embd.weight.1", "v.post_ln.weight", "mm.0.weight",
                          "mm.0.bias", "mm.2.weight", "mm.2.bias"], _SWIGLU_BLOCK),
    "qwen2vl_merger": (["v.patch_embd.weight", "v.patch_embd.weight.1", "v.post_ln.weight", "v.post_ln.bias",
                        "mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"], _VISION_BLOCK),
    "internvl": (["v.patch_embd.weight", "v.patch_embd.bias", "v.position_embd.weight", "v.class_embd",
                  "mm.model.mlp.0.weight", "mm.model.mlp.1.weight", "mm.model.mlp.3.weight"],
                 ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn_q.weight", "attn_k.weight",
                  "attn_v.weight", "attn_out.weight", "ffn_up.weight", "ffn_down.weight", "ls1.weight", "ls2.weight"]),
    "mlp": (["v.patch_embd.weight", "v.position_embd.weight", "v.class_embd", "v.pre_ln.weight", "v.pre_ln.bias",
             "mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"], _VISION_BLOCK),  # LLaVA-1.5
    "idefics3": (["v.patch_embd.weight", "v.patch_embd.bias", "v.position_embd.weight", "v.post_ln.weight",
                  "v.post_ln.bias", "mm.model.fc.weight"], _VISION_BLOCK),
    # Qwen3-VL: fused qkv, a learned position grid (resampled per image), patch bias; DeepStack mergers below
    "qwen3vl_merger": (["v.patch_embd.weight", "v.patch_embd.weight.1", "v.patch_embd.bias", "v.position_embd.weight",
                        "v.post_ln.weight", "v.post_ln.bias", "mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"],
                       [f"{t}.{k}" for t in ("ln1", "ln2", "attn_qkv", "attn_out", "ffn_up", "ffn_down")
                        for k in ("weight", "bias")]),
}
# DeepStack (qwen3vl_merger): each vision block flagged in clip.vision.is_deepstack_layers has its own merger, and
# the text model (`{arch}.n_deepstack_layers`) adds that many slices of the mmproj's output to its first layers
DEEPSTACK_FLAGS = "clip.vision.is_deepstack_layers"
DEEPSTACK_TENSORS = [f"{t}.{k}" for t in ("norm", "fc1", "fc2") for k in ("weight", "bias")]
VISION_KEYS = ["clip.vision.embedding_length", "clip.vision.feed_forward_length", "clip.vision.block_count",
               "clip.vision.projection_dim", "clip.vision.attention.head_count",
               "clip.vision.attention.layer_norm_epsilon", "clip.vision.image_size", "clip.vision.patch_size",
               "clip.vision.image_mean", "clip.vision.image_std"]
_TEXT_BLOCK = ["attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
               "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]
# text arch -> per-block tensors beyond the common set
TEXT_EXTRA_BLOCK = {"llama": [], "qwen2vl": ["attn_q.bias", "attn_k.bias", "attn_v.bias"],
                    "qwen2": ["attn_q.bias", "attn_k.bias", "attn_v.bias"],
                    "qwen3vl": ["attn_q_norm.weight", "attn_k_norm.weight"]}  # Qwen3's QK-norm
# hybrid text archs: per-block tensors by layer kind, in place of _TEXT_BLOCK + TEXT_EXTRA_BLOCK. Qwen3.5 (`qwen35`):
# every block has attn_norm, post_attention_norm and the MLP; full-attention blocks Qwen3's attention with QK-norm
# (attn_q twice as wide: query and output gate); Gated DeltaNet blocks the fused qkv, the output gate and the ssm_*
# tensors (llama.cpp's loader marks attn_qkv / attn_gate optional, its graph multiplies by them all the same)
_HYBRID_COMMON = ["attn_norm.weight", "post_attention_norm.weight", "ffn_gate.weight", "ffn_up.weight",
                  "ffn_down.weight"]
HYBRID_BLOCK = {"qwen35": {
    "attention": _HYBRID_COMMON + ["attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                                   "attn_q_norm.weight", "attn_k_norm.weight"],
    "recurrent": _HYBRID_COMMON + ["attn_qkv.weight", "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias", "ssm_a",
                                   "ssm_alpha.weight", "ssm_beta.weight", "ssm_norm.weight", "ssm_out.weight"]}}
TEXT_KEYS = ["context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
             "attention.head_count_kv", "attention.layer_norm_rms_epsilon"]
TEXT_ARCH_KEYS = {"llama": [], "qwen2": [], "qwen2vl": ["rope.dimension_sections"],
                  "qwen3vl": ["rope.dimension_sections", "n_deepstack_layers"],
                  "qwen35": ["rope.dimension_sections", "ssm.conv_kernel", "ssm.inner_size", "ssm.state_size",
                             "ssm.time_step_rank", "ssm.group_count"]}
TOKENIZER_KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"]


@dataclass(frozen=True)
class PairFacts:
    """What the runtime learns from the validated pair without loading it."""

    text_arch: str
    projector_type: str
    context_length: int
    n_embd: int
    n_vocab: int
    chat_template: str | None
    n_embd_image: int = 0
    """Width of one mmproj output row: n_embd, or n_embd * (1 + DeepStack levels) (Qwen3-VL)."""


def _value(reader: GGUFReader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _open(path: Path) -> GGUFReader:
    if not Path(path).is_file():
        raise GgufValidationError(f"{path}: file not found")
    try:
        return GGUFReader(str(path))
    except Exception as exc:  # gguf-py raises ValueError/struct errors on truncated or foreign files
        raise GgufValidationError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None


def _missing(what: str, path: Path, names: list[str]) -> None:
    if names:
        shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
        raise GgufValidationError(f"{path}: missing {what} llama.cpp needs: {shown}")


def validate_text(path: Path) -> tuple[GGUFReader, str]:
    reader = _open(path)
    arch = _value(reader, "general.architecture")
    if arch not in TEXT_ARCH_KEYS:
        raise GgufValidationError(f"{path}: text architecture {arch!r} is not one genrecal writes "
                                  f"({', '.join(TEXT_ARCH_KEYS)})")
    keys = [f"{arch}.{k}" for k in TEXT_KEYS + TEXT_ARCH_KEYS[arch]] + TOKENIZER_KEYS
    _missing("metadata keys", path, [k for k in keys if k not in reader.fields])
    n_layer = int(_value(reader, f"{arch}.block_count"))
    names = {t.name for t in reader.tensors}
    want = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{t}" for i, block in enumerate(_text_blocks(reader, arch, n_layer)) for t in block]
    _missing("tensors", path, [n for n in want if n not in names])
    return reader, arch


def _text_blocks(reader: GGUFReader, arch: str, n_layer: int) -> list[list[str]]:
    """The tensors llama.cpp reads in each text block. Hybrid archs: which blocks are recurrent comes from
    `{arch}.attention.recurrent_layers`, else (as llama.cpp) every block but each full_attention_interval-th."""
    if arch not in HYBRID_BLOCK:
        return [_TEXT_BLOCK + TEXT_EXTRA_BLOCK[arch]] * n_layer
    flags = _value(reader, f"{arch}.attention.recurrent_layers")
    if flags is None:
        interval = int(_value(reader, f"{arch}.full_attention_interval") or 4)
        flags = [(i + 1) % interval != 0 for i in range(n_layer)]
    kinds = HYBRID_BLOCK[arch]
    return [kinds["recurrent" if flag else "attention"] for flag in list(flags)[:n_layer]]


def _shape(reader: GGUFReader, name: str) -> list[int]:
    """ggml order: ne[0] is the row length."""
    return next([int(x) for x in t.shape] for t in reader.tensors if t.name == name)


def validate_mmproj(path: Path, text_n_embd: int | None = None) -> tuple[GGUFReader, str]:
    reader = _open(path)
    if _value(reader, "general.architecture") != "clip" or not _value(reader, "clip.has_vision_encoder"):
        raise GgufValidationError(f"{path}: not a vision mmproj (general.architecture 'clip' with a vision encoder)")
    proj = _value(reader, "clip.projector_type")
    if proj not in VISION_TENSORS:
        raise GgufValidationError(f"{path}: projector type {proj!r} is not one genrecal validates "
                                  f"({', '.join(VISION_TENSORS)})")
    _missing("metadata keys", path, [k for k in VISION_KEYS if k not in reader.fields])
    n_embd = int(_value(reader, "clip.vision.embedding_length"))
    if int(_value(reader, "clip.vision.feed_forward_length")) == n_embd:
        raise GgufValidationError(f"{path}: vision FFN width == embedding width ({n_embd}); clip.cpp would "
                                  "swap ffn_up/ffn_down")
    if len(_value(reader, "clip.vision.image_mean")) != 3 or len(_value(reader, "clip.vision.image_std")) != 3:
        raise GgufValidationError(f"{path}: image_mean / image_std must have 3 values")
    globals_, block = VISION_TENSORS[proj]
    n_layer = int(_value(reader, "clip.vision.block_count"))
    names = {t.name for t in reader.tensors}
    want = globals_ + [f"v.blk.{i}.{t}" for i in range(n_layer) for t in block]
    flags = _value(reader, DEEPSTACK_FLAGS) or []
    want += [f"v.deepstack.{i}.{t}" for i, flag in enumerate(flags) if flag for t in DEEPSTACK_TENSORS]
    _missing("tensors", path, [n for n in want if n not in names])
    # LLaVA's legacy writer puts CLIP's own projection_dim there; its projector's output is mm.2's rows
    proj_dim = _shape(reader, "mm.2.weight")[1] if proj == "mlp" else int(_value(reader, "clip.vision.projection_dim"))
    if text_n_embd is not None and proj_dim != text_n_embd:
        raise GgufValidationError(f"{path}: projector output {proj_dim} != text model width {text_n_embd}")
    return reader, proj


def validate_pair(model_path: Path, mmproj_path: Path) -> PairFacts:
    """Raise GgufValidationError naming the first problem; else facts about the pair."""
    text, arch = validate_text(model_path)
    n_embd = int(_value(text, f"{arch}.embedding_length"))
    mmproj, proj = validate_mmproj(mmproj_path, n_embd)
    adds = int(_value(text, f"{arch}.n_deepstack_layers") or 0)
    writes = sum(map(bool, _value(mmproj, DEEPSTACK_FLAGS) or []))
    if adds != writes:
        raise GgufValidationError(f"{model_path} adds {adds} DeepStack slices but {mmproj_path} writes {writes}: "
                                  "llama.cpp would read the image features misaligned")
    return PairFacts(
        text_arch=arch, projector_type=proj, context_length=int(_value(text, f"{arch}.context_length")),
        n_embd=n_embd, n_vocab=_shape(text, "token_embd.weight")[1],
        chat_template=_value(text, "tokenizer.chat_template"), n_embd_image=n_embd * (1 + adds))


if __name__ == "__main__":
    facts = validate_pair(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"ok: {facts.text_arch} + {facts.projector_type}, n_embd {facts.n_embd}, vocab {facts.n_vocab}")
