"""The typed `extra` of an ONNX artifact's manifest: what export writes and the runtimes read.

    facts = OnnxFacts.from_extra(load_manifest(dir).extra)   # runtime side
    extra = facts.to_extra()                                 # export side (Manifest.extra)

Torch-free. Keys the dataclass does not know (written by a newer genrecal) are kept in `other` and
written back unchanged; a missing required key is one ManifestError naming it.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from genrecal.artifacts.manifest import ManifestError


@dataclass
class OnnxFacts:
    graphs: dict[str, str]
    """role ("vision" | "embed" | "decoder") -> graph path inside the artifact dir."""
    vision_inputs: list[str]
    """The vision graph's input names, in order."""
    num_layers: int
    num_kv_heads: int
    head_dim: int
    """KV cache shape per layer: [batch, num_kv_heads, length, head_dim]."""
    hidden_size: int
    vocab_size: int
    image_token_id: int | None
    """The token the processor repeats once per image feature (its rows take the vision output)."""
    eos_token_ids: list[int]
    pad_token_id: int | None
    mrope: bool
    """Decoder position_ids are M-RoPE [3, B, L] (onnx_feeds.rope_index), not [B, L]."""
    vision_feeds: str = "passthrough"
    """Feed rule (onnx_feeds.FEEDS) from the processor's output to the vision graph's inputs."""
    spatial_merge_size: int | None = None
    """M-RoPE families: the vision merger's side (image grid cells per token side)."""
    layer_types: list[str] | None = None
    """Hybrid bodies (Qwen3.5): transformers' per-layer kinds; a "linear_attention" layer carries a conv and a
    recurrent state instead of a KV pair (layout.past_names). None: every layer is attention."""
    linear_state_shapes: dict[str, list[int]] | None = None
    """Hybrid bodies: per-layer state shapes without the batch axis, {"conv": [conv_dim, kernel - 1],
    "recurrent": [value_heads, key_head_dim, value_head_dim]}; both start at zeros."""
    exporters: dict[str, str] = field(default_factory=dict)
    """role -> what wrote the graph ("torchscript", "dynamo", "onnxruntime-genai builder")."""
    opsets: dict[str, int] = field(default_factory=dict)
    genai: str = ""
    """genai_config.json's name when written, else why not."""
    decoder_from: str = ""
    """Which decoder shipped and why (genrecal's TorchScript graph or onnxruntime-genai's builder)."""
    decoder_inputs: list[str] | None = None
    """The builder decoder's input names (it may take no position_ids)."""
    past_present_share_buffer: bool = False
    """The decoder can write present into the past buffer in place (GroupQueryAttention)."""
    ops: dict = field(default_factory=dict)
    op_domains: list[str] = field(default_factory=list)
    quantization: str = ""
    quantization_config: dict = field(default_factory=dict)
    other: dict = field(default_factory=dict)
    """Keys this genrecal does not know, kept as written."""

    @classmethod
    def from_extra(cls, extra: dict) -> "OnnxFacts":
        known = {f.name for f in fields(cls)} - {"other"}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in extra]
        if missing:
            raise ManifestError(f"ONNX manifest lacks {', '.join(missing)}: exported by an older genrecal; re-export")
        return cls(**{k: v for k, v in extra.items() if k in known},
                   other={k: v for k, v in extra.items() if k not in known})

    def to_extra(self) -> dict:
        out = asdict(self)
        other = out.pop("other")
        return {**out, **other}
