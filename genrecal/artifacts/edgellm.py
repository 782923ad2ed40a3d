"""Names of an Edge-LLM artifact and of the device side, defined once (torch-free: a device reads it).

    OUT/edgellm-{precision}/
      llm/                    Edge-LLM's exporter: model.onnx (+ data), config.json, embedding.safetensors,
                              tokenizer files, chat_template.jinja
      visual/                 Edge-LLM's exporter: model.onnx, config.json, preprocessor_config.json
      parity/                 images/*.png, input.json (llm_inference's request file, greedy) and
                              reference.json (PyTorch greedy tokens + top-k logits, made on the host)
      host_checks.json        what was checked here without a GPU (checks.py)
      genrecal_manifest.json  format "edgellm": Edge-LLM version, exact commands, device commands
On the device (C++ tools built from Edge-LLM's source, same version), from the artifact dir:
      engines/llm/llm.engine, engines/visual/visual.engine   llm_build / visual_build
      results/output.json, results/profile.json              llm_inference

Part of genrecal/artifacts/ (the device contract): imports nothing but the standard library.
"""
from __future__ import annotations

PACKAGE = "tensorrt-edgellm"
VERSION = "0.11.0"  # ONNX files and engines are tied to it: the device must build Edge-LLM at this tag
# the exporter's visual step imports its quantization package (modelopt, requests, datasets), which its
# `export` extra does not install; the pins are those of Edge-LLM's own `tools` extra
EXTRA_REQUIREMENTS = ("nvidia-modelopt==0.45.0", "datasets==5.0.0", "requests")
EXPORT_MODULE = "tensorrt_edgellm.scripts.export"  # console script tensorrt-edgellm-export
QUANTIZE_MODULE = "tensorrt_edgellm.scripts.quantize"  # console script tensorrt-edgellm-quantize

FORMAT = "edgellm"  # genrecal manifest format
LLM_DIR, VISUAL_DIR, PARITY_DIR = "llm", "visual", "parity"
ONNX_NAME = "model.onnx"
CONFIG_NAME = "config.json"
EMBEDDING_NAME = "embedding.safetensors"
EMBEDDING_TENSOR = "embedding"
CHAT_TEMPLATE = "chat_template.jinja"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
HOST_CHECKS = "host_checks.json"
PARITY_INPUT = "input.json"  # llm_inference --inputFile
PARITY_REFERENCE = "reference.json"
PARITY_IMAGES = "images"

# device side, relative to the artifact dir
ENGINE_DIR = "engines"
LLM_ENGINE = "engines/llm/llm.engine"
VISUAL_ENGINE = "engines/visual/visual.engine"
RESULTS_DIR = "results"
OUTPUT_JSON = "results/output.json"  # llm_inference --outputFile
PROFILE_JSON = "results/profile.json"  # llm_inference --profileOutputFile
TOOLS = ("llm_build", "visual_build", "llm_inference")  # built from Edge-LLM's C++ source on the device

# Which genrecal families Edge-LLM takes with their vision tower is each family's fact (Family.edgellm, with
# Family.edgellm_note saying why not); export/edgellm/routing.py reads it.

# Edge-LLM's quantiser recipes (tensorrt-edgellm-quantize --quantization); fp16 is the plain export
PRECISIONS = ("fp16", "int4_awq", "fp8", "int8_sq", "nvfp4")
INT4_GROUP = 128  # Edge-LLM's INT4-AWQ group size: every quantised Linear's in_features must divide by it
# what each device class runs (Orin: Ampere, no FP8/FP4 tensor cores; Thor: Blackwell)
DEVICE_PRECISIONS = {"orin": ("fp16", "int4_awq", "int8_sq"), "thor": PRECISIONS}
# InternVL in Edge-LLM's runtime: tile counts are derived from token budgets at this many tokens per tile
INTERNVL_TOKENS_PER_TILE = 256


def dirname(precision: str) -> str:
    """edgellm-fp16, edgellm-int4_awq, ..."""
    return f"{FORMAT}-{precision}"


def fallback_line(family: str, why: str) -> str:
    """The one line `--target jetson` prints for a family whose vision Edge-LLM cannot take (`why`)."""
    return (f"jetson: {why}; writing genrecal's own TensorRT path instead (standard-ops ONNX fp16 + "
            "tensorrt-plan, engines built by `genrecal-export build-engine` on the Jetson), not an Edge-LLM artifact")
