"""The text decoder graph from onnxruntime-genai's model builder (`--onnx-decoder builder`), for
students whose language model the builder knows: llama-type (SmolVLM, Idefics3) and the M-RoPE families
(Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

    facts = write_builder_decoder(model, tokenizer, "int4", Path("dst/decoder_model_merged.onnx"), work)

genrecal's own decoder (graphs.export_decoder, TorchScript) keeps attention, rotary embedding, masks and
norms as hundreds of small ONNX ops per layer, which onnxruntime's CPU optimiser does not fuse (measured
with `genrecal-bench peers --profile`). The builder writes the same decoder with onnxruntime's fused
contrib ops (GroupQueryAttention with rotary inside, SkipSimplifiedLayerNormalization, fused QKV and
gate/up MatMuls). The builder writes it in fp32 and genrecal's quantize.py converts it like its own
decoder (int4: HQQ with the zero-point rewrite and an 8-bit LM head; int8w: 8-bit MatMulNBits), so the
two decoders differ in graph structure only (the builder's own int4 is round-to-nearest: small-smollm2
real-text top-1 0.51 against HQQ's 0.97). Built
with `exclude_embeds=true`, its interface is genrecal's decoder's (inputs_embeds, attention_mask,
past_key_values.* -> logits, present.*) minus position_ids, which the attention derives from the mask.
The graph is an onnxruntime one (contrib ops): fp16 (TensorRT) and int8 (quantize_dynamic) keep
genrecal's own decoder.

M-RoPE families: the builder writes their decoder only from the full VLM folder of a class it knows
(Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration; it refuses Qwen2-VL), so the text
weights go into a shell of that class with a one-block vision tower it never reads (Qwen2-VL's text body is
Qwen2.5-VL's: same layers, biases and sectioned M-RoPE). Its graph keeps position_ids, [3, B, L] (the
MRotaryEmbedding op; GroupQueryAttention without its own rotary), which the runtime feeds as it feeds
genrecal's decoder. The builder drops DeepStack (Qwen3-VL): `add_deepstack` puts it back, in genrecal's
layout (OnnxSpec.deepstack). The builder also leaves out all-zero biases, so parity is tested with non-zero ones.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from genrecal.export.onnx.files import OnnxExportError, save_graph
from genrecal.export.onnx.quantize import convert_graph

# text model_type -> what the builder reads: None = the language model alone as <Text>ForCausalLM
# (text_causal_lm), else the transformers VLM class whose text decoder it writes (vlm_shell)
TEXT_TYPES = {
    "llama": None,
    "qwen2_5_vl_text": "Qwen2_5_VLForConditionalGeneration",
    "qwen2_vl_text": "Qwen2_5_VLForConditionalGeneration",  # refused as Qwen2-VL; the same text body converts
    "qwen3_vl_text": "Qwen3VLForConditionalGeneration",
}
PRECISIONS = ("fp32", "int4", "int8w")  # the builder writes fp32; quantize.convert_graph does the rest
TIMEOUT_S = 1800


def unsupported(model, precision: str) -> str | None:
    """Why the builder cannot write this student's decoder at `precision`, or None."""
    text = model.config.get_text_config()
    if text.model_type not in TEXT_TYPES:
        return f"its text model is {text.model_type!r} (the builder route takes {', '.join(TEXT_TYPES)})"
    if precision not in PRECISIONS:
        return f"precision {precision} keeps genrecal's decoder (builder route: {', '.join(PRECISIONS)})"
    return None


def builder_input(model, tokenizer, out: Path) -> tuple[Path, str | None]:
    """The dir the builder reads for this student (TEXT_TYPES) and the VLM class it is read as (None: text only)."""
    shell = TEXT_TYPES[model.config.get_text_config().model_type]
    return (vlm_shell(model, tokenizer, shell, out) if shell else text_causal_lm(model, tokenizer, out)), shell


def vlm_shell(model, tokenizer, class_name: str, out: Path) -> Path:
    """The VLM's text decoder and LM head (bit for bit, fp32) in a `class_name` model whose vision tower is
    one tiny block (the builder reads only the text weights; a real tower would only cost load time)."""
    import torch
    import transformers

    cls = getattr(transformers, class_name)
    text = model.config.get_text_config()
    tie = bool(getattr(model.config, "tie_word_embeddings", False))
    text_dict = {k: v for k, v in text.to_dict().items() if k not in ("model_type", "architectures")}
    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=1, out_hidden_size=text.hidden_size,
                  deepstack_visual_indexes=[])  # the builder drops DeepStack; add_deepstack restores it
    config = cls.config_class(text_config={**text_dict, "tie_word_embeddings": tie}, vision_config=vision,
                              tie_word_embeddings=tie)
    config.architectures = [class_name]
    shell = cls(config).to(torch.float32)
    shell.get_decoder().load_state_dict(model.get_decoder().state_dict())
    shell.get_output_embeddings().load_state_dict(model.get_output_embeddings().state_dict())
    shell.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def text_causal_lm(model, tokenizer, out: Path) -> Path:
    """The VLM's language model alone as a `<Text>ForCausalLM` dir (decoder layers, final norm,
    embeddings and LM head, bit for bit, in fp32) plus the tokenizer: what text-only exporters read."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = model.config.get_text_config()
    cfg.architectures = [f"{type(model.get_decoder()).__name__.removesuffix('Model')}ForCausalLM"]
    lm = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    lm.model.load_state_dict(model.get_decoder().state_dict())
    lm.lm_head.load_state_dict(model.get_output_embeddings().state_dict())
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def run_builder(text_dir: Path, out: Path, precision: str, extra: tuple[str, ...] = ()) -> Path:
    """`python -m onnxruntime_genai.models.builder -i text_dir -o out -p precision -e cpu` + extra
    options; OnnxExportError with the builder's last error line."""
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(text_dir), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(out / ".cache")]
    if extra:
        cmd += ["--extra_options", *extra]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise OnnxExportError(f"onnxruntime-genai's builder took over {TIMEOUT_S} s") from None
    if done.returncode or not (out / "model.onnx").is_file():
        lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln]
        raise OnnxExportError(f"onnxruntime-genai's builder failed ({precision}): "
                              f"{(errors or lines or ['no output'])[-1][:300]}")
    shutil.rmtree(out / ".cache", ignore_errors=True)
    return out / "model.onnx"


def unavailable() -> str | None:
    """Why the builder cannot run here (onnxruntime-genai not installed), or None."""
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return "onnxruntime-genai is not installed (pip install onnxruntime-genai==0.18.0)"
    return None


def write_builder_decoder(model, tokenizer, precision: str, dst: Path, work: Path) -> dict:
    """Write the builder's decoder for `precision` to `dst` (genrecal's decoder file name; one sidecar
    when large, like every genrecal graph). Returns manifest facts. OnnxExportError when unsupported."""
    reason = unsupported(model, precision)
    if reason:
        raise OnnxExportError(f"--onnx-decoder builder: {reason}")
    missing = unavailable()
    if missing:
        raise OnnxExportError(f"--onnx-decoder builder: {missing}")
    import onnxruntime_genai
    work.mkdir(parents=True, exist_ok=True)
    levels = deepstack_levels(model)
    with tempfile.TemporaryDirectory(prefix="builder-", dir=work) as tmp:
        source, shell = builder_input(model, tokenizer, Path(tmp) / "text")
        graph = onnx.load(str(run_builder(source, Path(tmp) / "out", "fp32", ("exclude_embeds=true",))))
        _fix_head_dim(graph, model.config.get_text_config())
        if levels:
            add_deepstack(graph, model.config.get_text_config().hidden_size, levels)
        inputs = [i.name for i in graph.graph.input]
        if precision == "fp32":
            save_graph(graph, dst)
            quantized = {}
        else:
            fp32 = Path(tmp) / "decoder_fp32.onnx"
            save_graph(graph, fp32)
            del graph
            quantized = {"decoder_quantization": convert_graph(fp32, dst, precision)}
    return {"decoder_from": f"onnxruntime-genai {onnxruntime_genai.__version__} model builder "
                            f"(-p fp32 -e cpu, exclude_embeds=true)"
                            + (f", text weights read as {shell}" if shell else "")
                            + (f", DeepStack ({levels} levels) added by genrecal" if levels else "")
                            + ("" if precision == "fp32" else f", quantised by genrecal ({precision})"),
            "decoder_inputs": inputs, "past_present_share_buffer": True, **quantized}


def _fix_head_dim(graph: onnx.ModelProto, text_cfg) -> None:
    """The builder leaves the KV head dim symbolic ('kv_cache_dim'); clients that size an empty cache
    from the graph's dims (transformers.js) need the number."""
    head_dim = getattr(text_cfg, "head_dim", None) or text_cfg.hidden_size // text_cfg.num_attention_heads
    for value in (*graph.graph.input, *graph.graph.output):
        if value.name.startswith(("past_key_values.", "present.")):
            dim = value.type.tensor_type.shape.dim[3]
            if dim.dim_param:
                dim.Clear()
                dim.dim_value = head_dim


def deepstack_levels(model) -> int:
    """The text layers that add DeepStack features (the family's OnnxSpec.deepstack); 0 without."""
    from genrecal.families import onnx_spec

    spec = onnx_spec(model.config.model_type)
    return spec.deepstack(model) if spec.deepstack else 0


# the skip-norms that open text layer i (input_layernorm) and the final norm (at layer num_layers): each sums the
# residual stream left by the layer before it
_LAYER_OPENING_NORM = re.compile(r"^/model/layers\.(\d+)/(input_layernorm|final_norm_layernorm)/SkipLayerNorm$")


def add_deepstack(graph: onnx.ModelProto, hidden: int, levels: int) -> None:
    """Give the builder's decoder genrecal's DeepStack interface (OnnxSpec.deepstack): inputs_embeds
    [B, L, D * (1 + levels)], the layers reading the first D columns, and slice i + 1 added to the output of
    text layer i. The builder never materialises a layer's output: the next layer's SkipSimplifiedLayerNorm
    sums the residual and the MLP output (and passes the sum on as its output 3), so the slice is added to
    that norm's skip input, which puts it into the residual stream exactly where genrecal's Decoder adds it."""
    embeds = next((i for i in graph.graph.input if i.name == "inputs_embeds"), None)
    norms = {int(m.group(1)): n for n in graph.graph.node if (m := _LAYER_OPENING_NORM.match(n.name))}
    if embeds is None or any(i + 1 not in norms for i in range(levels)):
        raise OnnxExportError("the builder's decoder has no inputs_embeds or not the per-layer skip-norms DeepStack "
                              f"is added at (layers 1..{levels}); its node names changed: check add_deepstack")
    embeds.type.tensor_type.shape.dim[2].dim_value = hidden * (1 + levels)
    text = "/model/deepstack/text_embeds"
    for node in graph.graph.node:
        node.input[:] = [text if name == "inputs_embeds" else name for name in node.input]
    first = []
    for k in range(1 + levels):  # k = 0: the text columns; k = i + 1: layer i's DeepStack slice
        bounds = [f"/model/deepstack/{k}/{end}" for end in ("start", "end")]
        for name, value in zip(bounds, (hidden * k, hidden * (k + 1))):
            graph.graph.initializer.append(onnx.numpy_helper.from_array(np.array([value], np.int64), name))
        first.append(onnx.helper.make_node("Slice", ["inputs_embeds", *bounds, "/model/deepstack/axis"],
                                           [text if k == 0 else f"/model/deepstack/{k}/slice"],
                                           name=f"/model/deepstack/{k}/Slice"))
    graph.graph.initializer.append(onnx.numpy_helper.from_array(np.array([2], np.int64), "/model/deepstack/axis"))
    adds = {}
    for i in range(levels):  # [B, L, D] each, zero in text rows
        norm = norms[i + 1]
        added = f"/model/deepstack/{i + 1}/add_output"
        adds[id(norm)] = onnx.helper.make_node("Add", [norm.input[1], f"/model/deepstack/{i + 1}/slice"], [added],
                                               name=f"/model/deepstack/{i + 1}/Add")
        norm.input[1] = added
    nodes = list(first)
    for node in graph.graph.node:  # each Add right before the norm it feeds: the list stays topological
        nodes += [adds[id(node)], node] if id(node) in adds else [node]
    graph.graph.ClearField("node")
    graph.graph.node.extend(nodes)
