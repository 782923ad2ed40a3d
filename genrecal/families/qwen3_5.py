"""Qwen3.5 (Qwen3_5ForConditionalGeneration): Qwen3-VL's vision tower without DeepStack (SigLIP2-style ViT
with a learned position grid -> patch merger) and a *hybrid* text body at ``model.model.language_model``:
`layer_types` mixes Gated DeltaNet layers ("linear_attention": a causal depthwise conv over q/k/v, then the
gated delta rule, a matrix-valued recurrent state per value head) with gated full-attention layers
("full_attention": Qwen3 attention with QK-norm and a sigmoid output gate); real checkpoints put one full
layer after every three linear ones (full_attention_interval 4), so the last layer is a full one.

Norms are zero-centred RMSNorms (the weight is stored as w - 1: transformers initialises it to 0).
Rotary: interleaved M-RoPE over a *partial* rotary dimension (partial_rotary_factor; real checkpoints 0.25).

Tokens, chat template and the image-token scheme are Qwen2-VL's (qwen2_vl.py): the processor expands
`<|image_pad|>` to (H/patch * W/patch) / merge^2 tokens. Real Qwen3.5 checkpoints have a 248,320-row
vocabulary and put the specials at 248,044+; llama.cpp's vocab-only `ggml-vocab-qwen35.gguf` (the
real-shape zoo size's tokenizer) holds the Qwen3.5 pre-tokenizer over 151,936 entries, so the zoo adds the
specials after them and keeps the real 248,320-row embedding (rows past the tokenizer are padding, as in
real checkpoints).

The Recalibrator for a Qwen3.5 student copies the student's last *full-attention* layers, never Gated
DeltaNet ones (model_access.attention_layers; docs/method.md says why). The runtimes' M-RoPE ids are
Qwen2-VL's rule (get_rope_index gives the same ids for image prompts; tested).
"""
from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

from genrecal.artifacts.gguf_pair.layout import GgufExportError
from genrecal.artifacts.layout import LINEAR_ATTENTION
from genrecal.families import register
from genrecal.families.base import ClientFacts, Family, TokenizerSpec
from genrecal.families.gguf_parts import ConverterRoute, GgufRoute
from genrecal.families.model_access import text_model
from genrecal.families.onnx_parts import OnnxSpec
from genrecal.families.qwen2_vl import CHAT_TEMPLATE, GGUF_IMAGE_PLACEHOLDER, SPECIALS, gguf_prompt_format, mrope_ids
from genrecal.families.qwen3_vl import Qwen3Vision, processor_for, visible_norms_and_biases

# Qwen3.5's special tokens in its real 248k vocabulary (Qwen3_5Config's defaults for the image ids)
REAL_IDS = {"<|endoftext|>": 248044, "<|im_start|>": 248045, "<|im_end|>": 248046, "<|vision_start|>": 248053,
            "<|vision_end|>": 248054, "<|image_pad|>": 248056, "<|video_pad|>": 248057}
REAL_VOCAB = 248320

_SIZES = {
    # 4 text layers alternating Gated DeltaNet and full attention (interval 2: two attention layers, what the
    # default 2-block Recalibrator copies; real checkpoints use 4), the last one full as in real checkpoints;
    # head_dim 64 with partial rotary 0.25 -> 16 rotary dims -> 8 frequencies, mrope_section [3, 3, 2]
    # (the real [11, 11, 10] over 32); linear attention with fewer key heads than value heads, as real ones
    "tiny": dict(d=64, layers=4, interval=2, heads=4, kv=2, head_dim=64, lk_heads=2, lv_heads=4, lk_dim=16, lv_dim=16,
                 vd=64, vlayers=2, vheads=4, patch=8, grid=36, mrope=[3, 3, 2], pixels=64 * 64),
    "base": dict(d=128, layers=4, interval=2, heads=4, kv=2, head_dim=64, lk_heads=2, lv_heads=4, lk_dim=32, lv_dim=32,
                 vd=128, vlayers=2, vheads=4, patch=8, grid=36, mrope=[3, 3, 2], pixels=64 * 64),
    # tiny with every text weight row a multiple of 256 (hidden 256, FFN 768, 4 value heads of 64), so llama.cpp's
    # Q4_K_M really writes K-quants (rows of 64 fall back to Q5_0 / Q8_0): the client matrix's size
    # (benchmarks/gguf_client_matrix.py); key heads of 64 too, as llama.cpp needs (converter_check)
    "gguf": dict(d=256, ffn=768, layers=4, interval=2, heads=4, kv=2, head_dim=64, lk_heads=2, lv_heads=4, lk_dim=64,
                 lv_dim=64, vd=64, vlayers=2, vheads=4, patch=8, grid=36, mrope=[3, 3, 2], pixels=64 * 64),
    # Qwen3.5-0.8B's shapes (random weights): 24 layers (18 Gated DeltaNet, 6 full), hidden 1024, FFN 3584,
    # full attention 8 heads / 2 KV heads of 256 (rotary over 64 of them), linear attention 16 heads of 128,
    # conv kernel 4; vision 12 blocks of 768 with patch 16 and a 48x48 position grid; the real 248,320-row
    # tied embedding. Build it with `vocab_gguf=` llama.cpp's ggml-vocab-qwen35.gguf
    "0.8b": dict(d=1024, ffn=3584, layers=24, heads=8, kv=2, head_dim=256, lk_heads=16, lv_heads=16, lk_dim=128,
                 lv_dim=128, vd=768, vffn=3072, vlayers=12, vheads=12, patch=16, grid=2304, mrope=[11, 11, 10],
                 positions=262144, rope_theta=1e7, tie=True, vocab=REAL_VOCAB, min_pixels=256 * 256,
                 pixels=4096 * 4096),
}


def qwen3_5_text_pipeline(tokenizer) -> None:
    """Give the tokenizer Qwen3.5's own normaliser (NFC) and pre-tokenizer (its Split regex, then byte-level),
    in place: transformers' Qwen3_5Tokenizer imposes both on whatever vocabulary it loads, so a zoo tokenizer
    trained with plain byte-level splits would tokenize differently once saved and reloaded."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX

    backend = tokenizer.backend_tokenizer
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def build_tiny(size: str, tokenizer, seed: int):
    s = _SIZES[size]
    qwen3_5_text_pipeline(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    config = Qwen3_5Config(
        text_config=dict(
            vocab_size=max(len(tokenizer), s.get("vocab", 0)), hidden_size=s["d"],
            intermediate_size=s.get("ffn", 2 * s["d"]), num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], num_key_value_heads=s["kv"], head_dim=s["head_dim"],
            linear_num_key_heads=s["lk_heads"], linear_num_value_heads=s["lv_heads"],
            linear_key_head_dim=s["lk_dim"], linear_value_head_dim=s["lv_dim"], linear_conv_kernel_dim=4,
            full_attention_interval=s.get("interval", 4), max_position_embeddings=s.get("positions", 1024), rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": s.get("rope_theta", 10000.0),
                             "partial_rotary_factor": 0.25, "mrope_section": s["mrope"],
                             "mrope_interleaved": True},
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=s.get("tie", False),
        ),
        vision_config=dict(
            depth=s["vlayers"], hidden_size=s["vd"], intermediate_size=s.get("vffn", 2 * s["vd"]),
            num_heads=s["vheads"], patch_size=s["patch"], spatial_merge_size=2, temporal_patch_size=2,
            out_hidden_size=s["d"], num_position_embeddings=s["grid"],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=s.get("tie", False),
    )
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen3_5ForConditionalGeneration(config)
    if size != "0.8b":  # real-shape weights stay as transformers initialises them
        visible_norms_and_biases(model, seed)
    return model, processor_for(s, tokenizer)


# ---- ONNX ----
def gated_delta_scan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                     state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated delta rule, token by token (transformers' torch_recurrent_gated_delta_rule after its
    normalisations): q, k [B, H, L, dk] (l2-normed, q scaled), v [B, H, L, dv], g (log decay) and beta
    [B, H, L], state [B, H, dk, dv] -> (out [B, H, L, dv], state). Run scripted (scripted_scan), so the ONNX
    export keeps the loop (a Loop node over a dynamic L) instead of unrolling the traced length."""
    outs: list[torch.Tensor] = []
    for t in range(q.shape[2]):
        state = state * torch.exp(g[:, :, t])[:, :, None, None]
        memory = (state * k[:, :, t, :, None]).sum(-2)
        delta = (v[:, :, t] - memory) * beta[:, :, t, None]
        state = state + k[:, :, t, :, None] * delta[:, :, None, :]
        outs.append((state * q[:, :, t, :, None]).sum(-2))
    return torch.stack(outs, 2), state


@functools.cache
def scripted_scan():
    """gated_delta_scan compiled by TorchScript, once, on first use (torch warns that scripting is deprecated:
    the legacy ONNX exporter genrecal's decoders use still turns a scripted loop into a Loop node, and nothing
    else does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(gated_delta_scan)


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)  # transformers' l2norm (eps 1e-6)


def gated_delta_net(attn: nn.Module, x: torch.Tensor, mask: torch.Tensor, conv: torch.Tensor,
                    recurrent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Gated DeltaNet token mixer on [B, L, D] with explicit states: conv [B, C, kernel - 1] (the last
    kernel - 1 inputs of the causal conv), recurrent [B, Hv, dk, dv]; mask [B, L] zeroes padding rows.
    -> (out [B, L, D], conv', recurrent'). transformers' prefill (chunked) and decode (recurrent) paths in one:
    the conv runs over [state, inputs] without padding, the delta rule token by token."""
    bsz, length, _ = x.shape
    x = x * mask[:, :, None].to(x.dtype)
    mixed = torch.cat([conv, attn.in_proj_qkv(x).transpose(1, 2)], dim=2)  # [B, C, kernel - 1 + L]
    new_conv = mixed[:, :, -(attn.conv_kernel_size - 1):]
    mixed = F.silu(F.conv1d(mixed, attn.conv1d.weight, attn.conv1d.bias, groups=mixed.shape[1]))  # [B, C, L]
    q, k, v = torch.split(mixed.transpose(1, 2), [attn.key_dim, attn.key_dim, attn.value_dim], dim=-1)
    q = q.reshape(bsz, length, -1, attn.head_k_dim)
    k = k.reshape(bsz, length, -1, attn.head_k_dim)
    v = v.reshape(bsz, length, -1, attn.head_v_dim)
    beta = attn.in_proj_b(x).sigmoid()
    g = -attn.A_log.float().exp() * F.softplus(attn.in_proj_a(x).float() + attn.dt_bias)
    groups = attn.num_v_heads // attn.num_k_heads
    if groups > 1:  # each key head serves `groups` consecutive value heads
        q, k = q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)
    q, k = _l2norm(q.transpose(1, 2)), _l2norm(k.transpose(1, 2))
    q = q / (q.shape[-1] ** 0.5)
    out, new_recurrent = scripted_scan()(q, k, v.transpose(1, 2), g.transpose(1, 2), beta.transpose(1, 2),
                                          recurrent)
    z = attn.in_proj_z(x).reshape(-1, attn.head_v_dim)
    out = attn.norm(out.transpose(1, 2).reshape(-1, attn.head_v_dim), z).reshape(bsz, length, -1)
    return attn.out_proj(out), new_conv, new_recurrent


class _LayerKv:
    """The cache object transformers' attention calls `update(k, v, layer_idx)` on: past + new, kept."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor):
        self.key, self.value = key, value

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.key, self.value = torch.cat([self.key, key], dim=2), torch.cat([self.value, value], dim=2)
        return self.key, self.value


class HybridDecoder(nn.Module):
    """inputs_embeds [B, L, D], attention_mask [B, past + L], position_ids [3, B, L], then per layer
    (layout.past_names with `layer_types`) a KV pair or a conv + recurrent state -> logits [B, L, V], then
    the same per layer (present_*). The body's own modules (norms, attention, MLP, rotary) run as they are;
    the Gated DeltaNet mixers run through gated_delta_net with explicit states."""

    def __init__(self, model: nn.Module, deepstack: int = 0):
        super().__init__()
        if deepstack:
            raise ValueError("Qwen3.5 has no DeepStack")
        self.body = text_model(model)
        self.head = model.get_output_embeddings()
        self.config = model.config.get_text_config()
        self.layer_types = list(self.config.layer_types)
        self.embeds_width = self.config.hidden_size

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        length = inputs_embeds.shape[1]
        total = attention_mask.shape[1]
        # additive [B, 1, L, past + L]: query i (at past + i) sees keys <= past + i that the mask keeps
        q_pos = torch.arange(length, device=inputs_embeds.device)[:, None] + (total - length)
        allowed = (torch.arange(total, device=inputs_embeds.device)[None, :] <= q_pos)[None, None] \
            & attention_mask[:, None, None, :].bool()
        additive = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype).masked_fill(
            ~allowed, torch.finfo(inputs_embeds.dtype).min)
        rows = attention_mask[:, -length:]
        h = inputs_embeds
        cos_sin = self.body.rotary_emb(h, position_ids)
        present = []
        for i, layer in enumerate(self.body.layers):
            first, second = past[2 * i], past[2 * i + 1]
            x = layer.input_layernorm(h)
            if self.layer_types[i] == LINEAR_ATTENTION:
                x, first, second = gated_delta_net(layer.linear_attn, x, rows, first, second)
            else:
                cache = _LayerKv(first, second)
                x, _ = layer.self_attn(hidden_states=x, position_embeddings=cos_sin, attention_mask=additive,
                                       past_key_values=cache)
                first, second = cache.key, cache.value
            present += [first, second]
            h = h + x
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return (self.head(self.body.norm(h)), *present)


def state_shapes(config) -> dict[str, list[int]]:
    """A linear-attention layer's state shapes without the batch axis (OnnxFacts.linear_state_shapes)."""
    text = config.get_text_config()
    key_dim = text.linear_num_key_heads * text.linear_key_head_dim
    conv_dim = 2 * key_dim + text.linear_num_value_heads * text.linear_value_head_dim
    return {"conv": [conv_dim, text.linear_conv_kernel_dim - 1],
            "recurrent": [text.linear_num_value_heads, text.linear_key_head_dim, text.linear_value_head_dim]}


ONNX = OnnxSpec(
    vision_inputs=("pixel_values", "image_grid_thw"),
    vision_axes={"pixel_values": {0: "num_patches"}, "image_grid_thw": {0: "num_images"}},
    wrap_vision=Qwen3Vision, mrope=True, wrap_decoder=HybridDecoder, linear_states=state_shapes,
    notes="vision as Qwen3-VL's without DeepStack; the decoder carries each Gated DeltaNet layer's conv and "
          "recurrent state as past_conv.i / past_recurrent.i (transformers.js's names), the delta rule as an "
          "ONNX Loop over the new tokens",
)


# ---- GGUF (llama.cpp's converter) ----
def converter_check(hf_dir: Path) -> None:
    """llama.cpp (llama-cpp-python 0.3.36) runs the delta rule with one head size for keys and values
    (`qwen35.ssm.state_size`, the key heads'): a student whose linear_key_head_dim != linear_value_head_dim
    converts but does not load. Real checkpoints use 128 for both."""
    text = json.loads((Path(hf_dir) / "config.json").read_text()).get("text_config", {})
    k, v = text.get("linear_key_head_dim"), text.get("linear_value_head_dim")
    if k != v:
        raise GgufExportError(f"{hf_dir}: Gated DeltaNet key heads of {k} and value heads of {v}; llama.cpp runs "
                              "the delta rule with one head size for both")


# text `qwen35` (Gated DeltaNet blocks flagged in qwen35.attention.recurrent_layers), mmproj `qwen3vl_merger` without
# DeepStack levels. "--no-mtp": the converter otherwise expects real checkpoints' multi-token-prediction head
# (mtp.*), which transformers does not load and a student does not have
GGUF = GgufRoute(
    text_arch="qwen35", projector_type="qwen3vl_merger", image_placeholder=GGUF_IMAGE_PLACEHOLDER,
    prompt_format=gguf_prompt_format,
    converter=ConverterRoute(check=converter_check, pre_tokenizer="required", text_flags=("--no-mtp",)),
)


FAMILY = register(Family(
    name="qwen3_5",
    model_class="Qwen3_5ForConditionalGeneration",
    tokenizer=TokenizerSpec(
        # apart from every other Qwen family's learned vocabulary (qwen2_vl 1000, qwen2_5_vl 430, qwen3_vl 445)
        algorithm="bpe", vocab_size=452, special_tokens=SPECIALS,
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", real_ids=REAL_IDS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=tuple(_SIZES),
    rope_position_ids=mrope_ids,
    image_token="<|image_pad|>",
    onnx=ONNX,
    gguf=GGUF,
    # onnxruntime-genai 0.18's builder writes a Qwen3.5 CPU decoder, but with its own contrib ops
    # (LinearAttention, CausalConvWithState) and its own state names (past.{i}.conv / past.{i}.recurrent); genrecal
    # does not drop it into its layout yet, so every precision ships genrecal's decoder (transformers.js and
    # genrecal's runtime run it: client matrix)
    clients=ClientFacts(onnx_decoder_auto_why="the builder's Qwen3.5 decoder (its own linear-attention contrib ops "
                                              "and state names) is not wired into genrecal's layout yet"),
    edgellm=True,  # Edge-LLM 0.11 exports Qwen3.5 with its vision tower (tests/export/test_edgellm_slow.py)
    edgellm_images="grid",
    notes="hybrid body: Gated DeltaNet (linear attention, conv + recurrent state) and gated full-attention "
          "layers, zero-centred RMSNorms, interleaved partial M-RoPE; Qwen3-VL's vision without DeepStack.",
))
