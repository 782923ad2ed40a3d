"""onnxruntime-genai's `genai_config.json`, for the families its runtime runs (qwen2_5_vl, qwen2_vl).

onnxruntime-genai's Qwen2.5-VL pipeline merges image features inside its *embedding* graph
(input_ids + image_features -> inputs_embeds), unlike the onnx-community `embed_tokens.onnx`
(input_ids only). So for these families we also write `embed_tokens_genai.onnx`, a tiny graph that
embeds and scatters the features into the image-token rows; genai computes the M-RoPE ids itself
from `vision_start_token_id`, `image_token_id` and `spatial_merge_size`.

genai preprocesses images itself, with onnxruntime-extensions, from its own processor config
(`genai_processor_config.json`, named in genai_config.json's `vision.config_filename`; HF's
`processor_config.json` keeps its name for transformers and transformers.js). Tested with
onnxruntime-genai 0.18 (tests/export/test_onnx_clients.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from genrecal.artifacts import layout
from genrecal.export.onnx.files import export_graph

GENAI_EMBED_GRAPH = "embed_tokens_genai.onnx"
# Which genai pipeline (`model.type`) runs a family's export is the family's fact (ClientFacts.genai_type).
# genai 0.18 has no qwen2_vl type ("Unsupported model_type in config.json: qwen2_vl"), but its qwen2_5_vl
# pipeline fits the qwen2_vl export as is: the same image processor, vision-graph inputs (pixel_values,
# image_grid_thw -> image_features) and M-RoPE ids; Qwen2.5's window attention lives in the graph.
GENAI_PROCESSOR_CONFIG = "genai_processor_config.json"


class GenaiEmbedding(nn.Module):
    """input_ids [B, L], image_features [N, D] -> inputs_embeds [B, L, D] with the N image-token
    rows replaced by the features (N may be 0 for a text-only prompt)."""

    def __init__(self, model: nn.Module, image_token_id: int):
        super().__init__()
        self.embed = model.get_input_embeddings()
        self.image_token_id = image_token_id

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        embeds = self.embed(input_ids)  # [B, L, D]
        rows = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(rows, image_features.to(embeds.dtype))


def export_genai_embedding(model: nn.Module, image_token_id: int, path: Path) -> None:
    ids = torch.full((2, 5), image_token_id, dtype=torch.long)
    ids[:, 0] = 0 if image_token_id != 0 else 1  # a text row and image rows, so both paths are traced
    feats = torch.randn(int((ids == image_token_id).sum()), model.config.get_text_config().hidden_size)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "image_features": {0: "num_image_tokens"},
            "inputs_embeds": {0: "batch", 1: "seq"}}
    export_graph(GenaiEmbedding(model, image_token_id).eval(), (ids, feats), path, ("input_ids", "image_features"),
                 ("inputs_embeds",), axes, "torchscript")


def bos_token_id(config, facts: dict) -> int:
    """genai's config parser needs a number for bos_token_id. Qwen2-VL tokenizers have no BOS token;
    their checkpoints name <|endoftext|> (also their pad token) as bos_token_id, so the same
    fallback here: the config's id, else the pad id, else the first EOS id."""
    for value in (config.get_text_config().bos_token_id, getattr(config, "bos_token_id", None),
                  facts.get("pad_token_id"), facts["eos_token_ids"][0]):
        if value is not None:
            return int(value)


def genai_config(config, facts: dict, genai_type: str) -> dict:
    """The genai_config.json dict for a Qwen2.5-VL-style artifact."""
    text = config.get_text_config()
    session = {"log_id": "onnxruntime-genai", "provider_options": []}
    vision = config.vision_config
    return {
        "model": {
            "type": genai_type,
            "bos_token_id": bos_token_id(config, facts),
            "eos_token_id": facts["eos_token_ids"],
            "pad_token_id": facts["pad_token_id"],
            "image_token_id": config.image_token_id,
            "video_token_id": config.video_token_id,
            "vision_start_token_id": config.vision_start_token_id,
            "context_length": text.max_position_embeddings,
            "vocab_size": facts["vocab_size"],
            "decoder": {
                "filename": layout.DECODER_GRAPH, "session_options": session,
                "head_size": facts["head_dim"], "hidden_size": facts["hidden_size"],
                "num_attention_heads": text.num_attention_heads, "num_hidden_layers": facts["num_layers"],
                "num_key_value_heads": facts["num_kv_heads"],
                "inputs": {"inputs_embeds": "inputs_embeds", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
            "embedding": {
                "filename": GENAI_EMBED_GRAPH, "session_options": session,
                "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                "outputs": {"inputs_embeds": "inputs_embeds"},
            },
            "vision": {
                "filename": layout.VISION_GRAPH, "session_options": session,
                "spatial_merge_size": vision.spatial_merge_size, "patch_size": vision.patch_size,
                "config_filename": GENAI_PROCESSOR_CONFIG,
                "tokens_per_second": float(getattr(vision, "tokens_per_second", 2.0)),
                "inputs": {"pixel_values": "pixel_values", "image_grid_thw": "image_grid_thw"},
                "outputs": {"image_features": "image_features"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "max_length": min(text.max_position_embeddings, 4096),
                   "min_length": 0, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0, "num_return_sequences": 1},
    }


def _op(name: str, kind: str, **attrs) -> dict:
    return {"operation": {"name": name, "type": kind, **({"attrs": attrs} if attrs else {})}}


def genai_processor_config(image: dict) -> dict:
    """onnxruntime-extensions' description of a Qwen2-VL image processor, from its saved settings
    (`image`: preprocessor_config.json): decode, RGB, Qwen's smart resize between min and max
    pixels, rescale, normalise, then cut into (temporal x patch x patch) patches in the HF
    processor's merge-block order (PatchImage)."""
    size = image.get("size") or {}
    # transformers >= 5 keeps Qwen's pixel bounds in size.shortest_edge / longest_edge
    min_pixels = size.get("shortest_edge") or image.get("min_pixels")
    max_pixels = size.get("longest_edge") or image.get("max_pixels")
    patch, merge = image["patch_size"], image["merge_size"]
    return {"processor": {"name": "qwen2_5_image_processor", "transforms": [
        _op("decode_image", "DecodeImage", color_space="RGB"),
        _op("convert_to_rgb", "ConvertRGB"),
        # width/height: a hint; smart_resize sizes each image itself (tested on 64x64, 96x48, 71x37 px)
        _op("resize", "Resize", width=patch * merge, height=patch * merge, smart_resize=1,
            min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch, merge_size=merge),
        _op("rescale", "Rescale", rescale_factor=image["rescale_factor"]),
        _op("normalize", "Normalize", mean=list(image["image_mean"]), std=list(image["image_std"]), qwen2_5_vl=1),
        _op("patch_image", "PatchImage", patch_size=patch, temporal_patch_size=image["temporal_patch_size"],
            merge_size=merge),
    ]}}


def write_genai(model: nn.Module, facts: dict, out_dir: Path, genai_type: str) -> None:
    """The genai embedding graph + genai_config.json (the processor config is written with the
    other side files, clients.arrange_for_clients)."""
    export_genai_embedding(model, facts["image_token_id"], out_dir / GENAI_EMBED_GRAPH)
    (out_dir / layout.GENAI_CONFIG).write_text(json.dumps(genai_config(model.config, facts, genai_type), indent=2) + "\n")
