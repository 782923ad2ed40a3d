"""The layout and side files other ONNX clients read, so that transformers.js (node or browser) and
onnxruntime-genai open an artifact dir exactly as genrecal-export writes it.

    facts = arrange_for_clients(artifact_dir, "int8", facts)   # after the graphs are written flat

- Graphs move to `onnx/<graph><suffix>.onnx` (layout.client_graph: "" fp32, "_fp16", "_quantized"
  int8, "_q4" int4: transformers.js's file names for its dtypes fp32 / fp16 / q8 / q4). A weight
  sidecar moves beside its graph under its own name (the graph records that name).
- The decoder's batch axis is named `batch_size`: transformers.js sizes the empty KV cache of the
  first step from the graph's input dims and resolves only that symbol (others become 0).
- `preprocessor_config.json`: the image processor's settings plus `processor_class`;
  transformers.js's AutoProcessor picks the processor class from this file, and without it builds
  a processor with no tokenizer ("Unable to apply chat template without a tokenizer").
- `tokenizer_config.json` carries the chat template (transformers.js reads it there only).
- LLaVA-style `processor_config.json` (`vision_feature_select_strategy` "default" + N additional
  image tokens) is restated as strategy "full" + N - 1: the same image-token count for
  transformers' processor, and transformers.js's LlavaProcessor, which ignores the strategy.
- `config.json` gets `"transformers.js_config": {"dtype": ...}`, so the folder loads at its own
  precision without a dtype option.
- `generation_config.json` is written from the facts when the student has none.
- `genai_config.json` (where written) names the moved graphs, and genai's own image-processor
  config (`genai_processor_config.json`, onnxruntime-extensions format) is written beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx

from genrecal.artifacts import layout
from genrecal.export.onnx.files import sidecar
from genrecal.export.onnx.genai import GENAI_PROCESSOR_CONFIG, genai_processor_config

DECODER_BATCH_AXIS = "batch_size"  # the one batch symbol transformers.js resolves for cache inputs


def move_graph(dst: Path, name: str, precision: str) -> str:
    """Move `dst/name` (and its sidecar) to its client path; returns that path relative to `dst`."""
    rel = layout.client_graph(name, precision)
    target = dst / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if sidecar(dst / name).is_file():  # keeps its name: the graph's external-data entries point at it
        sidecar(dst / name).rename(target.parent / sidecar(dst / name).name)
    (dst / name).rename(target)
    return rel


def rename_dim(path: Path, old: str, new: str) -> None:
    """Rename a symbolic dim on every input/output/value_info of a graph (weights untouched)."""
    model = onnx.load(str(path), load_external_data=False)
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == old:
                dim.dim_param = new
    onnx.save(model, str(path))


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_image_processor_config(dst: Path) -> None:
    """preprocessor_config.json from processor_config.json's nested image processor (transformers
    >= 5 nests it), with the processor class named."""
    proc = _read(dst / layout.PROCESSOR_CONFIG)
    image = {**_read(dst / layout.IMAGE_PROCESSOR_CONFIG), **proc.get("image_processor", {})}
    if image:
        image.setdefault("processor_class", proc.get("processor_class"))
        _write(dst / layout.IMAGE_PROCESSOR_CONFIG, image)


def restate_image_token_count(dst: Path) -> None:
    """Strategy "default" drops the CLS feature, so a prompt holds one image token fewer than
    patches + additional tokens; say so without the strategy, which both processors count alike."""
    proc = _read(dst / layout.PROCESSOR_CONFIG)
    if proc.get("vision_feature_select_strategy") == "default" and proc.get("num_additional_image_tokens", 0) >= 1:
        proc["num_additional_image_tokens"] -= 1
        proc["vision_feature_select_strategy"] = "full"
        _write(dst / layout.PROCESSOR_CONFIG, proc)


def write_tokenizer_chat_template(dst: Path) -> None:
    template = dst / layout.CHAT_TEMPLATE
    config = _read(dst / layout.TOKENIZER_CONFIG)
    if template.is_file() and config and not config.get("chat_template"):
        config["chat_template"] = template.read_text()
        _write(dst / layout.TOKENIZER_CONFIG, config)


def write_generation_config(dst: Path, facts: dict) -> None:
    if not (dst / layout.GENERATION_CONFIG).is_file():
        _write(dst / layout.GENERATION_CONFIG, {"eos_token_id": facts["eos_token_ids"],
                                                 "pad_token_id": facts["pad_token_id"]})


def set_client_dtype(dst: Path, precision: str) -> None:
    config = _read(dst / "config.json")
    config["transformers.js_config"] = {**config.get("transformers.js_config", {}),
                                        "dtype": layout.TRANSFORMERS_JS_DTYPE[precision]}
    _write(dst / "config.json", config)


def write_genai_side_files(dst: Path, moved: dict[str, str]) -> None:
    """Point genai_config.json's graph `filename`s at the moved graphs; write genai's processor config."""
    config = _read(dst / layout.GENAI_CONFIG)
    if not config:
        return
    for part in config["model"].values():
        if isinstance(part, dict) and part.get("filename") in moved:
            part["filename"] = moved[part["filename"]]
    _write(dst / layout.GENAI_CONFIG, config)
    _write(dst / GENAI_PROCESSOR_CONFIG, genai_processor_config(_read(dst / layout.IMAGE_PROCESSOR_CONFIG)))


def arrange_for_clients(dst: Path, precision: str, facts: dict) -> dict:
    """Move the flat graphs in `dst` into the client layout and write the side files; returns
    `facts` with `graphs` (role -> path relative to `dst`) updated."""
    dst = Path(dst)
    moved = {p.name: move_graph(dst, p.name, precision) for p in sorted(dst.glob("*.onnx"))}
    graphs = {role: moved[name] for role, name in facts["graphs"].items()}
    rename_dim(dst / graphs["decoder"], "batch", DECODER_BATCH_AXIS)
    write_image_processor_config(dst)
    restate_image_token_count(dst)
    write_tokenizer_chat_template(dst)
    write_generation_config(dst, facts)
    set_client_dtype(dst, precision)
    write_genai_side_files(dst, moved)
    return {**facts, "graphs": graphs}
