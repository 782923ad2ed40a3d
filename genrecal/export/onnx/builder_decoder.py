"""The text decoder graph from onnxruntime-genai's model builder (`--onnx-decoder builder`), for
students whose language model the builder knows (llama-type: SmolVLM, Idefics3).

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
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

from genrecal.export.onnx.files import OnnxExportError, save_graph
from genrecal.export.onnx.quantize import convert_graph

TEXT_TYPES = ("llama",)  # text model_types whose decoder the builder writes with genrecal's interface
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
    with tempfile.TemporaryDirectory(prefix="builder-", dir=work) as tmp:
        text = text_causal_lm(model, tokenizer, Path(tmp) / "text")
        graph = onnx.load(str(run_builder(text, Path(tmp) / "out", "fp32", ("exclude_embeds=true",))))
        _fix_head_dim(graph, model.config.get_text_config())
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
