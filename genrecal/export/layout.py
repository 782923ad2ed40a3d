"""Names of everything an export writes, defined once (dirs, graph files, manifest keys).

    OUT/hf/                  clean HF student (safetensors + processor)
    OUT/onnx-{precision}/    vision_encoder.onnx, embed_tokens.onnx, decoder_model_merged.onnx,
                             processor/tokenizer files, config.json (+ genai_config.json)
    OUT/tensorrt-plan/       fp16 standard-op ONNX graphs + plan.json (profiles, trtexec lines)
    OUT/gguf-{quant}/        written by genrecal.export.gguf
    OUT/export_summary.json  what was written, with parity results
Every artifact dir holds its own genrecal_manifest.json (genrecal.manifest).
"""
from __future__ import annotations

HF_DIR = "hf"
SUMMARY_NAME = "export_summary.json"

VISION_GRAPH = "vision_encoder.onnx"
EMBED_GRAPH = "embed_tokens.onnx"
DECODER_GRAPH = "decoder_model_merged.onnx"
GRAPHS = {"vision": VISION_GRAPH, "embed": EMBED_GRAPH, "decoder": DECODER_GRAPH}
GENAI_CONFIG = "genai_config.json"

PLAN_NAME = "plan.json"
ENGINE_NAMES = {"vision": "vision_encoder.engine", "embed": "embed_tokens.engine",
                "decoder": "decoder_model_merged.engine"}

OPSET = 17


def artifact_dirname(fmt: str, precision: str) -> str:
    """onnx-fp32, onnx-int8, gguf-q4_k_m, tensorrt-plan, ..."""
    return f"{fmt}-{precision}"


def past_names(n_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def decoder_inputs(n_layers: int) -> list[str]:
    return ["inputs_embeds", "attention_mask", "position_ids", *past_names(n_layers)]


def decoder_outputs(n_layers: int) -> list[str]:
    return ["logits", *present_names(n_layers)]
