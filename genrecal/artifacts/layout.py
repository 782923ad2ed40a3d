"""Names of everything an export writes, defined once (dirs, graph files, manifest keys).

    OUT/hf/                  clean HF student (safetensors + processor)
    OUT/onnx-{precision}/    onnx/{vision_encoder,embed_tokens,decoder_model_merged}{suffix}.onnx
                             (transformers.js layout: suffix "" fp32, "_fp16", "_quantized" int8,
                             "_q4" int4), processor/tokenizer/generation files, config.json
                             (+ genai_config.json)
    OUT/tensorrt-plan/       fp16 standard-op ONNX graphs + plan.json (profiles, trtexec lines)
    OUT/gguf-{quant}/        written by genrecal.export.gguf
    OUT/export_summary.json  what was written, with parity results
Every artifact dir holds its own genrecal_manifest.json (genrecal.artifacts.manifest).
"""
from __future__ import annotations

HF_DIR = "hf"
SUMMARY_NAME = "export_summary.json"

VISION_GRAPH = "vision_encoder.onnx"
EMBED_GRAPH = "embed_tokens.onnx"
DECODER_GRAPH = "decoder_model_merged.onnx"
GRAPHS = {"vision": VISION_GRAPH, "embed": EMBED_GRAPH, "decoder": DECODER_GRAPH}
GENAI_CONFIG = "genai_config.json"

# ONNX artifacts keep their graphs where transformers.js looks for them: ONNX_SUBDIR/<graph><suffix>.onnx
ONNX_SUBDIR = "onnx"
DTYPE_SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_quantized", "int8w": "_int8", "int4": "_q4"}
# its `dtype` option (int8w: transformers.js's "int8" file name; not run in transformers.js here)
TRANSFORMERS_JS_DTYPE = {"fp32": "fp32", "fp16": "fp16", "int8": "q8", "int8w": "int8", "int4": "q4"}
IMAGE_PROCESSOR_CONFIG = "preprocessor_config.json"  # the image processor alone (+ processor_class)
PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE = "chat_template.jinja"
GENERATION_CONFIG = "generation_config.json"

PLAN_NAME = "plan.json"
ENGINE_NAMES = {"vision": "vision_encoder.engine", "embed": "embed_tokens.engine",
                "decoder": "decoder_model_merged.engine"}

OPSET = 17


LINEAR_ATTENTION = "linear_attention"  # transformers' `layer_types` entry of a Gated DeltaNet layer (Qwen3.5)


def past_names(n_layers: int, layer_types: list[str] | None = None) -> list[str]:
    """The decoder graph's cache inputs, layer by layer: an attention layer's KV pair
    `past_key_values.{i}.key/value` [batch, kv_heads, past_len, head_dim]; with `layer_types` (hybrid
    bodies), a linear-attention layer's `past_conv.{i}` [batch, conv_dim, kernel - 1] and
    `past_recurrent.{i}` [batch, value_heads, key_head_dim, value_head_dim] instead (transformers.js's
    names for Qwen3.5). What export writes and the runtimes feed."""
    names = []
    for i in range(n_layers):
        if layer_types and layer_types[i] == LINEAR_ATTENTION:
            names += [f"past_conv.{i}", f"past_recurrent.{i}"]
        else:
            names += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    return names


def present_names(n_layers: int, layer_types: list[str] | None = None) -> list[str]:
    """The decoder graph's cache outputs, in past_names' order (`present.{i}.key/value`,
    `present_conv.{i}`, `present_recurrent.{i}`)."""
    return [name.replace("past_key_values.", "present.").replace("past_", "present_")
            for name in past_names(n_layers, layer_types)]


def artifact_dirname(fmt: str, precision: str) -> str:
    """onnx-fp32, onnx-int8, gguf-q4_k_m, tensorrt-plan, ..."""
    return f"{fmt}-{precision}"


def client_graph(name: str, precision: str) -> str:
    """Where an ONNX artifact of `precision` keeps graph `name`: onnx/decoder_model_merged_q4.onnx, ..."""
    stem = name[: -len(".onnx")] if name.endswith(".onnx") else name
    return f"{ONNX_SUBDIR}/{stem}{DTYPE_SUFFIX[precision]}.onnx"


def decoder_inputs(n_layers: int, layer_types: list[str] | None = None) -> list[str]:
    return ["inputs_embeds", "attention_mask", "position_ids", *past_names(n_layers, layer_types)]


def decoder_outputs(n_layers: int, layer_types: list[str] | None = None) -> list[str]:
    return ["logits", *present_names(n_layers, layer_types)]
