"""The two text-side graphs every family shares: token embedding and the KV-cached decoder.

The decoder takes the cache as flat tensors (``past_key_values.{i}.key/value``, each
[batch, kv_heads, past_len, head_dim]) and returns ``present.{i}.key/value`` with past_len + seq
rows: a DynamicCache is rebuilt inside forward because the tracer cannot carry cache objects.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from genrecal.families.base import text_model


class EmbedTokens(nn.Module):
    """input_ids [B, L] int64 -> inputs_embeds [B, L, D] (DeepStack: [B, L, D * (1 + deepstack)], the
    DeepStack slices zero: a token row adds nothing to the layers; see OnnxSpec.deepstack)."""

    def __init__(self, model: nn.Module, deepstack: int = 0):
        super().__init__()
        self.embed = model.get_input_embeddings()
        self.pad = deepstack * model.config.get_text_config().hidden_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = self.embed(input_ids)
        return nn.functional.pad(embeds, (0, self.pad)) if self.pad else embeds


class Decoder(nn.Module):
    """inputs_embeds [B, L, D], attention_mask [B, past+L], position_ids [B, L] (or [3, B, L] for
    M-RoPE), past (2 * n_layers tensors) -> logits [B, L, V], present (2 * n_layers tensors).

    deepstack n > 0 (OnnxSpec.deepstack): inputs_embeds are [B, L, D * (1 + n)]; the body runs on the first D
    columns and slice i + 1 is added to the output of text layer i (where the model adds DeepStack features to
    its image rows: the other rows' slices are zero)."""

    def __init__(self, model: nn.Module, deepstack: int = 0):
        super().__init__()
        self.body = text_model(model)
        self.head = model.get_output_embeddings()
        self.config = model.config.get_text_config()
        self.n_layers = self.config.num_hidden_layers
        self.deepstack = deepstack
        self.embeds_width = self.config.hidden_size * (1 + deepstack)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        cache = DynamicCache(config=self.config)
        for i in range(self.n_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        d, hooks = self.config.hidden_size, []
        for i in range(self.deepstack):  # a forward hook's return value replaces the layer's output
            extra = inputs_embeds[..., d * (i + 1):d * (i + 2)]
            hooks.append(self.body.layers[i].register_forward_hook(lambda mod, args, out, e=extra: out + e))
        try:
            out = self.body(inputs_embeds=inputs_embeds[..., :d] if self.deepstack else inputs_embeds,
                            attention_mask=attention_mask, position_ids=position_ids, past_key_values=cache,
                            use_cache=True)
        finally:
            for hook in hooks:
                hook.remove()
        logits = self.head(out.last_hidden_state)  # [B, L, V]
        present = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]  # each [B, kv_heads, past+L, head_dim]
        return (logits, *present)


def kv_shape(config) -> tuple[int, int]:
    """(kv_heads, head_dim) of the text config."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return getattr(config, "num_key_value_heads", None) or heads, head_dim
