"""TensorRT runtime (Jetson): deserialize the engines of a `tensorrt` export dir and generate greedily.

    rt = genrecal.runtimes.load("engines/")          # on the Jetson, after `genrecal-export build-engine`
    print(rt.generate([image], "What shape?").text)

The dir holds three engines in the onnx-community split (vision_encoder, embed_tokens,
decoder_model_merged with KV cache in/out), the processor files, and a manifest whose `extra`
this module reads:
    tensorrt_version  TensorRT that built the engines (refused if this one differs: engines are
                      not portable across versions)
    gpu               GPU name they were built on (refused on another GPU), compute_capability optional
    engines           {"vision": file, "embed": file, "decoder": file} (defaults below)
    decoder_profiles  {"prefill": i, "decode": j}: optimisation profile per phase (default 0 / last)
    num_layers, num_kv_heads, head_dim, image_token_id, eos_token_id: else read from config.json
Buffers are torch CUDA tensors bound by address (IO binding via `set_tensor_address`), run with
`execute_async_v3` on torch's current stream. The processor's output reaches the vision engine
through the family's ONNX spec (`vision_feeds`, shared with the exporter and the ONNX runtime).
Families with M-RoPE (qwen2_vl, qwen2_5_vl) need 3-D position ids computed outside the graph and
are refused here.

Not tested on this machine (no TensorRT, no GPU): only the missing-library path is.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from genrecal.artifacts.manifest import load_manifest
from genrecal.artifacts.onnx_feeds import vision_feeds
from genrecal.runtimes import sysinfo
from genrecal.runtimes.base import (
    STOP_CONTEXT, STOP_EOS, STOP_MAX_NEW, ContextFullError, Generation, RuntimeError_, Stream, Timing,
    config_context_length, new_token_budget, stop_record,
)
from genrecal.runtimes.prompt import prepare_inputs

ENGINES = {"vision": "vision_encoder.engine", "embed": "embed_tokens.engine",
           "decoder": "decoder_model_merged.engine"}


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError_(f"TensorRT is not installed here ({exc}): the tensorrt runtime runs on the Jetson, "
                            "with the tensorrt Python package from JetPack (venv: --system-site-packages)") from None
    try:
        import torch
    except ImportError:
        raise RuntimeError_("the tensorrt runtime needs torch (JetPack's CUDA wheel) for its buffers") from None
    if not torch.cuda.is_available():
        raise RuntimeError_("the tensorrt runtime needs a CUDA GPU; torch sees none")
    return trt, torch


def check_compatible(extra: dict, trt_version: str, gpu: str, capability: str | None = None) -> None:
    """Refuse engines built by another TensorRT version or for another GPU."""
    built = str(extra.get("tensorrt_version") or "")
    if not built:
        raise RuntimeError_("the manifest does not say which TensorRT built the engines; rebuild them here")
    if built.split(".")[:3] != trt_version.split(".")[:3]:
        raise RuntimeError_(f"engines were built with TensorRT {built}, this is TensorRT {trt_version}: engines are "
                            "not portable across versions; rebuild them here with `genrecal-export build-engine`")
    if extra.get("gpu") and extra["gpu"] != gpu:
        raise RuntimeError_(f"engines were built for {extra['gpu']}, this GPU is {gpu}: rebuild them here")
    if capability and extra.get("compute_capability") and str(extra["compute_capability"]) != capability:
        raise RuntimeError_(f"engines target compute capability {extra['compute_capability']}, this GPU has "
                            f"{capability}: rebuild them here")


class _Engine:
    """One deserialized engine + one execution context per optimisation profile."""

    def __init__(self, trt, torch, runtime, path: Path, profiles: int | None = None):
        self.trt, self.torch = trt, torch
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise RuntimeError_(f"{path.name}: TensorRT could not deserialize it (corrupt, or built elsewhere)")
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.contexts = []
        stream = torch.cuda.current_stream().cuda_stream
        for i in range(profiles or engine.num_optimization_profiles):
            ctx = engine.create_execution_context()
            if engine.num_optimization_profiles > 1:
                ctx.set_optimization_profile_async(i, stream)
            self.contexts.append(ctx)

    def torch_dtype(self, name: str):
        t, trt = self.torch, self.trt
        table = {trt.DataType.FLOAT: t.float32, trt.DataType.HALF: t.float16, trt.DataType.INT32: t.int32,
                 trt.DataType.INT64: t.int64, trt.DataType.BOOL: t.bool, trt.DataType.INT8: t.int8,
                 trt.DataType.BF16: t.bfloat16}
        return table[self.engine.get_tensor_dtype(name)]

    def run(self, feeds: dict, profile: int = 0) -> dict:
        """feeds: input name -> CUDA tensor (cast to the engine's dtype); returns output name -> tensor."""
        ctx = self.contexts[profile]
        keep = {}
        for name in self.inputs:
            if name not in feeds:
                raise RuntimeError_(f"engine input {name!r} was not provided (have {', '.join(feeds)})")
            tensor = feeds[name].to(self.torch_dtype(name)).contiguous()
            keep[name] = tensor
            ctx.set_input_shape(name, tuple(tensor.shape))
            ctx.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            outputs[name] = self.torch.empty(shape, dtype=self.torch_dtype(name), device="cuda")
            ctx.set_tensor_address(name, outputs[name].data_ptr())
        if not ctx.execute_async_v3(self.torch.cuda.current_stream().cuda_stream):
            raise RuntimeError_("TensorRT execution failed (see the TensorRT log above)")
        return outputs


class TensorRTRuntime:
    """`Runtime` over the three engines of a tensorrt export dir (greedy, batch 1)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, threads: int | None = None):
        t0 = time.perf_counter()
        trt, torch = _import_tensorrt()
        self.path, self.threads, self.torch = str(path), threads, torch
        root = Path(path)
        t_verify = time.perf_counter()
        manifest = load_manifest(root)
        self.verify_ms = (time.perf_counter() - t_verify) * 1000  # not part of load_ms (base.TIMING_DEFINITION)
        if manifest.format != "tensorrt":
            raise RuntimeError_(f"{root} is a {manifest.format} artifact, not TensorRT engines")
        extra = manifest.extra
        props = torch.cuda.get_device_properties(0)
        check_compatible(extra, trt.__version__, torch.cuda.get_device_name(0), f"{props.major}.{props.minor}")
        self.family = manifest.family
        if extra.get("mrope"):
            raise RuntimeError_(f"the tensorrt runtime does not compute {self.family}'s M-RoPE position ids yet")
        self.facts = _model_facts(root, extra)
        # the engines' profiles cap the prompt and the context (plan.json limits), the model's positions too
        limits = extra.get("plan") or {}
        self.max_prompt = limits.get("max_prompt")
        caps = [c for c in (limits.get("max_context"), config_context_length(root)) if c]
        self.context_length = min(caps) if caps else None
        self.vision_rule = extra.get("vision_feeds", "passthrough")  # onnx_feeds.FEEDS
        files = {**ENGINES, **extra.get("engines", {})}
        absent = [name for name in files.values() if not (root / name).is_file()]
        if absent:
            raise RuntimeError_(f"{root} has no {', '.join(absent)}: engines are built on the device; run "
                                f"`genrecal-export build-engine {root}` there first")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.vision = _Engine(trt, torch, runtime, root / files["vision"])
        self.embed = _Engine(trt, torch, runtime, root / files["embed"])
        self.decoder = _Engine(trt, torch, runtime, root / files["decoder"])
        n_prof = len(self.decoder.contexts)
        prof = extra.get("decoder_profiles", {})
        self.prefill_profile, self.decode_profile = prof.get("prefill", 0), prof.get("decode", n_prof - 1)
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(root)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.load_ms = (time.perf_counter() - t0) * 1000 - self.verify_ms

    def generate(self, images, prompt: str, max_new_tokens: int = 32, stream: bool = False) -> Generation | Stream:
        steps = self._steps(images, prompt, max_new_tokens)
        if stream:
            return Stream(self._pieces(steps))
        for _ in steps:
            pass
        return self._last

    def _pieces(self, steps):
        shown = ""
        for ids in steps:
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if text.startswith(shown) and len(text) > len(shown) and not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text
        return self._last

    def _inputs(self, images, prompt: str) -> dict:
        return prepare_inputs(self.processor, images, prompt)  # the one prompt builder (runtimes/prompt.py)

    def _steps(self, images, prompt: str, max_new_tokens: int):
        """Yields the generated ids after each step; leaves the Generation in self._last."""
        from genrecal.artifacts.layout import past_names

        torch, sync, f = self.torch, self.torch.cuda.synchronize, self.facts
        t_call = time.perf_counter()
        enc = self._inputs(images, prompt)  # numpy
        n_in = int(enc["input_ids"].shape[1])
        if self.max_prompt and n_in > self.max_prompt:
            raise ContextFullError(f"{self.path}: the prompt takes {n_in} tokens (image tokens included) and these "
                                   f"engines were built for prompts up to {self.max_prompt}: shorten the question or "
                                   "send fewer/smaller images (or rebuild the plan for a larger device profile)")
        budget = new_token_budget(n_in, max_new_tokens, self.context_length, self.path)  # same rule as every runtime
        ids = torch.from_numpy(enc["input_ids"]).cuda()  # [1, L]
        rule, inputs = self.vision_rule, f["vision_inputs"]
        feeds = ({k: torch.from_numpy(v).cuda() for k, v in vision_feeds(rule, enc, inputs).items()}
                 if "pixel_values" in enc else None)
        sync()
        t_pre = time.perf_counter()
        embeds = self.embed.run({"input_ids": ids})[self.embed.outputs[0]]  # [1, L, d]
        if feeds is not None:
            feats = self.vision.run(feeds)[self.vision.outputs[0]]  # [tokens, d]
            mask = ids[0] == f["image_token_id"]
            embeds[0, mask] = feats.reshape(-1, feats.shape[-1]).to(embeds.dtype)
        sync()
        t_vis = time.perf_counter()
        kv = f["num_kv_heads"], f["head_dim"]
        past = {name: torch.zeros((1, *kv[:1], 0, kv[1]), device="cuda") for name in past_names(f["num_layers"])}
        out_ids, stamps = [], []
        length, step_embeds, profile = 0, embeds, self.prefill_profile
        while len(out_ids) < budget:
            n = step_embeds.shape[1]
            feeds = {"inputs_embeds": step_embeds, **past,
                     "attention_mask": torch.ones((1, length + n), dtype=torch.int64, device="cuda"),
                     "position_ids": torch.arange(length, length + n, device="cuda").unsqueeze(0)}
            outs = self.decoder.run(feeds, profile)
            token = int(outs["logits"][0, -1].argmax())
            stamps.append(time.perf_counter())
            past = {k.replace("present", "past_key_values"): v for k, v in outs.items() if k.startswith("present")}
            length, profile = length + n, self.decode_profile
            out_ids.append(token)
            if token in f["eos_token_id"]:
                break
            yield out_ids[:]
            step_embeds = self.embed.run({"input_ids": torch.tensor([[token]], device="cuda")})[self.embed.outputs[0]]
        stop = STOP_EOS if out_ids and out_ids[-1] in f["eos_token_id"] else (
            STOP_CONTEXT if budget < max_new_tokens else STOP_MAX_NEW)
        self._last = self._result(out_ids, n_in, (t_call, t_pre, t_vis), stamps,
                                  stop_record(stop, n_in, len(out_ids), max_new_tokens, self.context_length))
        yield [t for t in out_ids if t not in f["eos_token_id"]]

    def _result(self, out_ids: list[int], n_in: int, marks: tuple, stamps: list[float], stop: dict) -> Generation:
        t_call, t_pre, t_vis = marks
        t_end = time.perf_counter()
        first = stamps[0] if stamps else t_end
        prefill_ms = (first - t_vis) * 1000
        per_tok = (stamps[-1] - first) * 1000 / (len(stamps) - 1) if len(stamps) > 1 else 0.0
        ids = [t for t in out_ids if t not in self.facts["eos_token_id"]]
        timing = Timing(
            load_ms=self.load_ms, preprocess_ms=(t_pre - t_call) * 1000, vision_encode_ms=(t_vis - t_pre) * 1000,
            prefill_ms=prefill_ms, prefill_tok_s=n_in / prefill_ms * 1000 if prefill_ms > 0 else 0.0,
            ttft_ms=(first - t_call) * 1000, decode_ms_per_token=per_tok,
            decode_tok_s=1000 / per_tok if per_tok > 0 else 0.0, e2e_ms=(t_end - t_call) * 1000,
            tokens_in=n_in, tokens_out=len(out_ids), peak_rss_mb=sysinfo.peak_rss_mb(),
            extra={"gpu_peak_mb": self.torch.cuda.max_memory_allocated() / 2**20, **stop},
        )
        return Generation(self.tokenizer.decode(ids, skip_special_tokens=True).strip(), ids, timing)


def _model_facts(root: Path, extra: dict) -> dict:
    """Layer/head counts and special ids: from the manifest, else the config.json shipped with the engines."""
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    text = config.get("text_config") or config
    heads = text.get("num_attention_heads")
    facts = {
        "num_layers": extra.get("num_layers", text.get("num_hidden_layers")),
        "num_kv_heads": extra.get("num_kv_heads", text.get("num_key_value_heads", heads)),
        "head_dim": extra.get("head_dim", text.get("head_dim") or (text.get("hidden_size", 0) // (heads or 1))),
        "image_token_id": extra.get("image_token_id", config.get("image_token_id", config.get("image_token_index"))),
        "eos_token_id": extra.get("eos_token_id", text.get("eos_token_id", config.get("eos_token_id"))),
        "vision_inputs": extra.get("vision_inputs", ["pixel_values"]),
    }
    missing = [k for k, v in facts.items() if v is None]
    if missing:
        raise RuntimeError_(f"{root}: cannot tell {', '.join(missing)} (not in the manifest or config.json)")
    eos = facts["eos_token_id"]
    facts["eos_token_id"] = {eos} if isinstance(eos, int) else set(eos)
    return facts
