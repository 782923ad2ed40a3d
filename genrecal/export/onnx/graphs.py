"""Export a clean HF student to the three fp32 ONNX graphs (onnx-community layout).

    model, processor = load_student(Path("out/hf"))
    facts = export_fp32_graphs(model, processor, Path("out/hf"), Path("work/fp32"))

The decoder and embedding graphs are traced with TorchScript (exact and ~20x faster than dynamo
for these wrappers); the vision graph uses the exporter its family's spec names. Trace sizes are
>= 2 on every dynamic axis because the exporters specialise sizes 0 and 1.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from genrecal.artifacts import layout
from genrecal.export.onnx.files import export_graph
from genrecal.export.onnx.genai import write_genai
from genrecal.export.onnx.wrappers import Decoder, EmbedTokens, kv_shape
from genrecal.families import get_family
from genrecal.families.base import image_token_id
from genrecal.families import get_family, onnx_spec, with_format
from genrecal.families.onnx_parts import OnnxSpec
from genrecal.runtimes.prompt import prepare_inputs

# files copied next to the graphs so an artifact dir is self-contained (processor + configs)
SIDE_FILES = ("config.json", "generation_config.json")


def load_student(hf_dir: Path):
    """(model, processor): fp32 whatever the checkpoint's dtype (bf16/fp16 weights are upcast exactly),
    eager attention. Every ONNX precision is derived from these fp32 graphs, and this model is the
    reference every parity check compares against."""
    model = AutoModelForImageTextToText.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager",
                                                        trust_remote_code=False).eval()
    processor = AutoProcessor.from_pretrained(hf_dir, trust_remote_code=False)
    return model, processor


def trace_vision_inputs(spec: OnnxSpec, processor) -> tuple[torch.Tensor, ...]:
    """Processor output for two images of different sizes, through the runtime's own feed function."""
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 64), (48, 64))]
    feeds = spec.feeds(prepare_inputs(processor, images, "What shape is it?"))
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in spec.vision_inputs)


def export_vision(model, processor, spec: OnnxSpec, path: Path) -> None:
    wrapper = spec.wrap_vision(model).eval()
    args = trace_vision_inputs(spec, processor)
    axes = {**spec.vision_axes, "image_features": {0: "num_image_tokens"}}
    export_graph(wrapper, args, path, spec.vision_inputs, ("image_features",), axes, spec.exporter)


def deepstack_layers(model, spec: OnnxSpec) -> int:
    """How many text layers add DeepStack features (OnnxSpec.deepstack); 0 for families without."""
    return spec.deepstack(model) if spec.deepstack else 0


def export_embed(model, spec: OnnxSpec, path: Path) -> None:
    ids = torch.ones(2, 3, dtype=torch.long)  # [B, L]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "inputs_embeds": {0: "batch", 1: "seq"}}
    export_graph(EmbedTokens(model, deepstack_layers(model, spec)).eval(), (ids,), path, ("input_ids",),
                 ("inputs_embeds",), axes, "torchscript")


def layer_types(model) -> list[str] | None:
    """A hybrid body's per-layer kinds (Qwen3.5), None when every layer is attention."""
    types = getattr(model.config.get_text_config(), "layer_types", None)
    return list(types) if types and layout.LINEAR_ATTENTION in types else None


def export_decoder(model, spec: OnnxSpec, path: Path) -> None:
    cfg = model.config.get_text_config()
    n_layers, (kv_heads, head_dim) = cfg.num_hidden_layers, kv_shape(cfg)
    types = layer_types(model)
    batch, seq, past = 2, 3, 4
    wrap = spec.wrap_decoder or Decoder
    decoder = wrap(model, deepstack_layers(model, spec)).eval()
    embeds = torch.randn(batch, seq, decoder.embeds_width)  # [B, L, D] (DeepStack: D * (1 + n))
    mask = torch.ones(batch, past + seq, dtype=torch.long)  # [B, past + L]
    pos = torch.arange(past, past + seq).expand(batch, seq)  # [B, L]
    pos_axes = {0: "batch", 1: "seq"}
    if spec.mrope:
        pos, pos_axes = pos.unsqueeze(0).expand(3, batch, seq).contiguous(), {1: "batch", 2: "seq"}  # [3, B, L]
    axes = {"inputs_embeds": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total_len"},
            "position_ids": pos_axes, "logits": {0: "batch", 1: "seq"}}
    cache = []
    states = spec.linear_states(model.config) if types else {}
    for name, out in zip(layout.past_names(n_layers, types), layout.present_names(n_layers, types)):
        kind = name.split(".")[0].removeprefix("past_")  # key_values | conv | recurrent
        if kind in states:  # fixed size: only the batch axis varies
            cache.append(torch.randn(batch, *states[kind]) * (0.1 if kind == "recurrent" else 1.0))
            axes[name] = axes[out] = {0: "batch"}
        else:
            cache.append(torch.randn(batch, kv_heads, past, head_dim))
            axes[name], axes[out] = {0: "batch", 2: "past_len"}, {0: "batch", 2: "total_len"}
    export_graph(decoder, (embeds, mask, pos, *cache), path, layout.decoder_inputs(n_layers, types),
                 layout.decoder_outputs(n_layers, types), axes, "torchscript")


def model_facts(model, processor, spec: OnnxSpec) -> dict:
    """What the runtime needs besides the graphs (stored in the manifest's `extra`)."""
    cfg = model.config.get_text_config()
    kv_heads, head_dim = kv_shape(cfg)
    eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None \
        else cfg.eos_token_id
    vision_cfg = getattr(model.config, "vision_config", None)
    return {
        "graphs": dict(layout.GRAPHS),
        "vision_inputs": list(spec.vision_inputs),
        "vision_feeds": spec.vision_feeds,
        "exporters": {"vision": spec.exporter, "embed": "torchscript", "decoder": "torchscript"},
        "num_layers": cfg.num_hidden_layers, "num_kv_heads": kv_heads, "head_dim": head_dim,
        "hidden_size": cfg.hidden_size, "vocab_size": cfg.vocab_size,
        "image_token_id": image_token_id(processor, get_family(model.config.model_type, role="export")),
        "eos_token_ids": sorted(set(eos if isinstance(eos, list) else [eos])),
        "pad_token_id": processor.tokenizer.pad_token_id,
        "mrope": spec.mrope,
        "spatial_merge_size": getattr(vision_cfg, "spatial_merge_size", None) if spec.mrope else None,
        **({"deepstack_layers": deepstack_layers(model, spec)} if spec.deepstack else {}),
        **({"layer_types": layer_types(model), "linear_state_shapes": spec.linear_states(model.config)}
           if layer_types(model) else {}),
        "opsets": {"vision": max(layout.OPSET, 18) if spec.exporter == "dynamo" else layout.OPSET,
                   "embed": layout.OPSET, "decoder": layout.OPSET},
    }


def genai_families() -> list[str]:
    return [name for name in with_format("onnx") if get_family(name, role="teacher").clients.genai_type]


def export_fp32_graphs(model, processor, hf_dir: Path, out_dir: Path) -> dict:
    """Write the three fp32 graphs + processor + configs of the student loaded from `hf_dir` into
    `out_dir` (plus genai_config.json where onnxruntime-genai knows the family); returns model facts."""
    spec = onnx_spec(model.config.model_type)
    out_dir.mkdir(parents=True, exist_ok=True)
    export_vision(model, processor, spec, out_dir / layout.VISION_GRAPH)
    export_embed(model, spec, out_dir / layout.EMBED_GRAPH)
    export_decoder(model, spec, out_dir / layout.DECODER_GRAPH)
    processor.save_pretrained(out_dir)
    for name in SIDE_FILES:
        if (Path(hf_dir) / name).is_file():
            shutil.copyfile(Path(hf_dir) / name, out_dir / name)
    facts = model_facts(model, processor, spec)
    family = get_family(model.config.model_type, role="export")
    if family.clients.genai_type:
        write_genai(model, facts, out_dir, family.clients.genai_type)
        facts["genai"] = layout.GENAI_CONFIG
    else:
        facts["genai"] = (f"not written: onnxruntime-genai has no {family.name} pipeline "
                          f"(genai_config.json is written for: {', '.join(genai_families())})")
    return facts
