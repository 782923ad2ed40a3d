"""Synthetic stand-ins for the Edge-LLM tests: a student dir, an Edge-LLM artifact shaped like 0.11.0's
output for it (graph names, configs, embedding table, preprocessor) and fake device tools.

No network and no Edge-LLM: the layout follows what `tensorrt-edgellm-export` 0.11.0 wrote for the zoo's
tiny qwen2_5_vl (see test_edgellm_slow.py, which checks the real thing).
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file

from genrecal.artifacts import edgellm as layout
from genrecal.artifacts.manifest import Manifest, write_manifest

VOCAB, HIDDEN = 40, 64
TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"
LLM_INPUTS = ["inputs_embeds", "past_key_values_0", "past_key_values_1", "rope_rotary_cos_sin", "positions",
              "kv_page_table", "logits_indices"]
PROCESSOR = {"patch_size": 8, "merge_size": 2, "temporal_patch_size": 2, "image_mean": [0.48, 0.45, 0.4],
             "image_std": [0.26, 0.26, 0.27], "size": {"longest_edge": 4096, "shortest_edge": 1024},
             "do_rescale": True, "rescale_factor": 1 / 255}


def student(root: Path, hidden: int = HIDDEN, ffn: int = 128, dtype=torch.bfloat16, template: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    text = {"hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": VOCAB, "intermediate_size": ffn, "max_position_embeddings": 1024}
    config = {"model_type": "qwen2_5_vl", "dtype": "bfloat16", "image_token_id": 5, "text_config": text,
              "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 8,
                                "spatial_merge_size": 2, "out_hidden_size": hidden, "intermediate_size": 64}}
    (root / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    save_file({"model.language_model.embed_tokens.weight": torch.randn(VOCAB, hidden).to(dtype),
               "model.visual.patch_embed.proj.weight": torch.randn(32, 3, 2, 8, 8).to(dtype),
               "model.language_model.layers.0.mlp.up_proj.weight": torch.randn(ffn, hidden).float()},
              str(root / "model.safetensors"))
    (root / "tokenizer.json").write_text("{}")
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}))
    if template:
        (root / layout.CHAT_TEMPLATE).write_text(TEMPLATE)
    return root


def _graph(path: Path, inputs: list[str], outputs: list[str]) -> None:
    nodes = [helper.make_node("Identity", [inputs[0]], [o]) for o in outputs]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT16, None) for n in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT16, None) for o in outputs])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def facts(family: str = "qwen2_5_vl") -> dict:
    """What reference.processor_facts returns for the fake student (image limits 4..16 merged tokens)."""
    return {"family": family, "processor": dict(PROCESSOR), "factor": 16, "image_tokens": {"min": 4, "max": 16},
            "parity_images": [{"name": "p0.png", "height": 64, "width": 64, "resized_hw": [64, 64]},
                              {"name": "p1.png", "height": 32, "width": 48, "resized_hw": [32, 48]}]}


def artifact(art: Path, hf: Path, manifest: bool = True) -> Path:
    """An Edge-LLM artifact of `hf` as 0.11.0 lays it out, + parity/ references and a genrecal manifest."""
    from safetensors.torch import load_file

    llm, vis = art / layout.LLM_DIR, art / layout.VISUAL_DIR
    llm.mkdir(parents=True, exist_ok=True)
    vis.mkdir(parents=True, exist_ok=True)
    config = json.loads((hf / "config.json").read_text())
    text = config["text_config"]
    _graph(llm / layout.ONNX_NAME, LLM_INPUTS, ["logits", "present_key_values_0", "present_key_values_1"])
    (llm / layout.CONFIG_NAME).write_text(json.dumps({"model": "qwen2_5_vl_text", "edgellm_version": layout.VERSION,
                                                      **text, "head_dim": text["hidden_size"] // 4,
                                                      "image_token_id": 5, "eos_token_id": [1]}))
    table = load_file(str(hf / "model.safetensors"))["model.language_model.embed_tokens.weight"]
    save_file({layout.EMBEDDING_TENSOR: table.to(torch.float16)}, str(llm / layout.EMBEDDING_NAME))
    for name in ("tokenizer.json", "tokenizer_config.json", layout.CHAT_TEMPLATE):
        (llm / name).write_text((hf / name).read_text())
    _graph(vis / layout.ONNX_NAME, ["input", "rotary_pos_emb", "cu_seqlens"], ["output"])
    (vis / layout.CONFIG_NAME).write_text(json.dumps({"model_type": "qwen2_5_vl", "vision_config": config["vision_config"],
                                                      "image_token_id": 5}))
    (vis / layout.PREPROCESSOR_CONFIG).write_text(json.dumps({**PROCESSOR, "image_processor_type": "Qwen2VL"}))
    write_parity(art / layout.PARITY_DIR)
    if manifest:
        from genrecal.export.edgellm.device import artifact_facts

        write_manifest(art, Manifest(format=layout.FORMAT, target="jetson", family="qwen2_5_vl", precision="fp16",
                                     source_sha256="0" * 64, extra={"model": artifact_facts(art, facts()),
                                                                    "image_tokens": facts()["image_tokens"]}))
    return art


REF_TOKENS = [[7, 8, 9, 10, 1], [11, 12, 13, 1]]


def reference_json() -> dict:
    """A reference.json: 2 prompts, greedy tokens (EOS 1) and top-3 logits per step."""
    prompts = []
    for i, toks in enumerate(REF_TOKENS):
        steps = [{"ids": [t, t + 20, t + 21], "logits": [2.0, 1.98, 1.2]} for t in toks]  # t+20 is a near-tie
        prompts.append({"image": f"parity/images/p{i}.png", "question": "What is it?", "prompt_text": f"<p{i}>",
                        "prompt_tokens": 30, "tokens": toks, "text": f"text {i}", "top_k": steps})
    return {"family": "qwen2_5_vl", "dtype": "float32", "top_k": 3, "max_new_tokens": 16, "eos_token_ids": [1],
            "prompts": prompts}


def write_parity(parity: Path) -> None:
    (parity / layout.PARITY_IMAGES).mkdir(parents=True, exist_ok=True)
    (parity / layout.PARITY_REFERENCE).write_text(json.dumps(reference_json()))
    (parity / layout.PARITY_INPUT).write_text(json.dumps({"requests": []}))


def output_json(tokens: list[list[int]] | None = None, with_ids: bool = True, texts: list[str] | None = None) -> dict:
    """llm_inference's --outputFile for those tokens (default: the reference's)."""
    tokens = tokens if tokens is not None else REF_TOKENS
    out = []
    for i, toks in enumerate(tokens):
        r = {"output_text": (texts or [f"text {j}" for j in range(len(tokens))])[i], "request_idx": i, "batch_idx": 0,
             "messages": [], "formatted_system_prompt": "", "formatted_complete_request": f"<p{i}>"}
        if with_ids:
            r["output_ids"] = toks
        out.append(r)
    return {"input_file": "parity/input.json", "responses": out}


FAKE_TOOL = """#!/bin/sh
# fake {name}: records its arguments; llm_inference writes canned results
echo "{name} $*" >> "$EDGELLM_BUILD/calls.log"
case "{name}" in
  llm_build) mkdir -p engines/llm && touch engines/llm/llm.engine ;;
  visual_build) mkdir -p engines/visual && touch engines/visual/visual.engine ;;
  llm_inference) mkdir -p results && cp "$EDGELLM_BUILD/output.json" results/output.json &&
    cp "$EDGELLM_BUILD/profile.json" results/profile.json && echo "=== Performance Summary ===" ;;
esac
"""


def fake_tools(build: Path, output: dict, profile: dict) -> Path:
    """An EDGELLM_BUILD dir whose three tools are shell scripts (llm_inference copies `output` and `profile`)."""
    from genrecal.export.edgellm.device import TOOL_PATHS

    for name, rel in TOOL_PATHS.items():
        path = build / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FAKE_TOOL.format(name=name))
        path.chmod(0o755)
    (build / "output.json").write_text(json.dumps(output))
    (build / "profile.json").write_text(json.dumps(profile))
    return build
