"""PyTorch eager runtime over a transformers model dir (the teacher, the student, or an `hf` export).

    from genrecal.runtimes.torch_runtime import TorchRuntime
    rt = TorchRuntime("out/student", threads=4)                       # CUDA if present, else CPU fp32
    rt = TorchRuntime("out/teacher", device="cuda", dtype="bf16")     # see torch_device.py
    gen = rt.generate([image], "What shape is in the image?", max_new_tokens=16)
    print(gen.text, gen.timing.decode_tok_s)

Greedy decoding through `model.generate` (the code path users run), timed by a streamer that
stamps each token as it is chosen. The vision tower + projector are timed separately by wrapping
the model's own `get_image_features` on this instance (every family in transformers 5.23 routes
images through it), so `prefill_ms` excludes them; on CUDA that span is synchronised, and every
token's stamp is taken after its id reached the host (the streamer's `.tolist()`).
"""
from __future__ import annotations

import functools
import queue
import threading
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForImageTextToText, AutoProcessor, BatchFeature, GenerationConfig
from transformers.generation.streamers import BaseStreamer

from genrecal.artifacts.integrity import check_safetensors_dir
from genrecal.runtimes import sysinfo
from genrecal.runtimes.base import (
    STOP_CONTEXT, STOP_EOS, STOP_MAX_NEW, TIMING_DEFINITION, Generation, RuntimeError_, Stream, Timing,
    new_token_budget, stop_record,
)
from genrecal.runtimes.prompt import prepare_inputs
from genrecal.runtimes.torch_device import Placement, checkpoint_dtype, resolve_placement


class _TokenClock(BaseStreamer):
    """Records when generate() hands over the prompt (prefill starts) and each new token."""

    def __init__(self, sink: queue.Queue | None = None):
        self.prompt_at: float | None = None
        self.token_at: list[float] = []
        self.tokens: list[int] = []
        self.sink = sink

    def put(self, value) -> None:
        now = time.perf_counter()
        if self.prompt_at is None:  # generate() first passes the prompt ids, right before prefill
            self.prompt_at = now
            return
        ids = value.reshape(-1).tolist()  # batch of one: one id per step
        self.tokens.extend(ids)
        self.token_at.extend([now] * len(ids))
        if self.sink is not None:
            self.sink.put(ids)

    def end(self) -> None:
        if self.sink is not None:
            self.sink.put(None)


class TorchRuntime:
    """`Runtime` over AutoModelForImageTextToText + AutoProcessor, one request at a time.

    device: auto | cpu | cuda; dtype: auto | fp32 | bf16 | fp16 (or a torch.dtype). auto: CUDA if torch
    sees one; on CUDA the checkpoint's dtype, on CPU fp32 (see torch_device.py for why).
    `placement` says what was chosen; raises RuntimeError_ for CUDA without a GPU or an unknown name.
    """

    name = "torch"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "auto",
                 dtype: str | torch.dtype = "auto"):
        t0 = time.perf_counter()
        self.path = str(path)
        if threads is not None:
            if threads < 1:
                raise RuntimeError_(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.processor = _load_processor(self.path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        dtype = str(dtype).replace("torch.", "") if isinstance(dtype, torch.dtype) else dtype
        self.placement = resolve_placement(device, dtype, checkpoint_dtype(self.path))
        self.model = _load_model(self.path, self.placement)
        self.family = self.model.config.model_type
        self._vision_spans: list[tuple[float, float]] = []
        self._time_vision()
        self.load_ms = (time.perf_counter() - t0) * 1000

    def _time_vision(self) -> None:
        """Accumulate the time spent in get_image_features (vision tower + projector) per request."""
        inner = getattr(self.model, "model", self.model)
        original = getattr(inner, "get_image_features", None)
        if original is None:
            return

        @functools.wraps(original)  # generate() inspects this signature to pick the encoder's inputs
        def timed(*args, **kwargs):
            self._sync()
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._sync()
                self._vision_spans.append((t, time.perf_counter()))

        inner.get_image_features = timed  # instance attribute: shadows the method for this model only

    # ---- request ----
    def prepare(self, images, prompt: str) -> dict:
        """Chat template + processor: the model inputs for one user turn (images first, then text)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise RuntimeError_("the prompt is empty")
        # genrecal.runtimes.prompt: the one prompt builder (user text stays text, as in ONNX and llama.cpp)
        inputs = BatchFeature(prepare_inputs(self.processor, images, prompt, return_tensors="pt"))
        # float inputs (pixel values) in the model's dtype, every tensor on its device
        return inputs.to(self.placement.device, dtype=self.placement.torch_dtype)

    def _reset_gpu_peak(self) -> None:
        if self.placement.device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def _sync(self) -> None:
        """Wait for queued CUDA work, so wall-clock stamps cover it (a no-op on the CPU)."""
        if self.placement.device == "cuda":
            torch.cuda.synchronize()

    @property
    def context_length(self) -> int | None:
        """Tokens the text model's positions cover (its config's max_position_embeddings); None: unbounded."""
        value = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return value if isinstance(value, int) else None

    def generate(self, images, prompt: str, max_new_tokens: int = 32, stream: bool = False) -> Generation | Stream:
        t_call = time.perf_counter()
        inputs = self.prepare(images, prompt)
        # prompt + new tokens stay inside the context (base.new_token_budget: the rule of every runtime)
        limits = (new_token_budget(int(inputs["input_ids"].shape[1]), max_new_tokens, self.context_length,
                                   self.path), max_new_tokens)
        t_pre = time.perf_counter()
        if stream:
            return Stream(self._stream(inputs, t_call, t_pre, limits))
        clock = _TokenClock()
        self._vision_spans = []
        self._reset_gpu_peak()
        self._run(inputs, clock, limits[0], self.threads)
        return self._result(inputs, clock, t_call, t_pre, time.perf_counter(), limits)

    def _stream(self, inputs: dict, t_call: float, t_pre: float, limits: tuple[int, int]):
        sink: queue.Queue = queue.Queue()
        clock = _TokenClock(sink)
        failure: list[BaseException] = []

        def work():
            try:
                self._run(inputs, clock, limits[0], self.threads)
            except BaseException as exc:  # re-raised in the consumer's thread
                failure.append(exc)
                sink.put(None)

        self._vision_spans = []
        self._reset_gpu_peak()
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        ids: list[int] = []
        shown = ""
        while (piece := sink.get()) is not None:
            ids.extend(piece)
            text = self.tokenizer.decode(self._strip_eos(ids), skip_special_tokens=True)
            if len(text) > len(shown) and not text.endswith("\ufffd"):  # wait for whole UTF-8 characters
                yield text[len(shown):]
                shown = text
        worker.join()
        if failure:
            raise failure[0]
        text = self.tokenizer.decode(self._strip_eos(ids), skip_special_tokens=True)
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown):]  # what was held back waiting for a whole character
        return self._result(inputs, clock, t_call, t_pre, time.perf_counter(), limits)

    def _run(self, inputs: dict, clock: _TokenClock, max_new_tokens: int, threads: int) -> None:
        torch.set_num_threads(threads)  # process-wide, and per OS thread for the streaming worker
        config = GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
            eos_token_id=self._eos_ids(), pad_token_id=self.tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            self.model.generate(**inputs, generation_config=config, streamer=clock)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    def _strip_eos(self, ids: list[int]) -> list[int]:
        stops = set(self._eos_ids())
        return ids[:-1] if ids and ids[-1] in stops else ids

    def _result(self, inputs: dict, clock: _TokenClock, t_call: float, t_pre: float, t_end: float,
                limits: tuple[int, int]) -> Generation:
        ids = self._strip_eos(clock.tokens)
        text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        timing = self._timing(inputs, clock, t_call, t_pre, t_end)
        budget, asked = limits
        stop = STOP_EOS if len(ids) < len(clock.tokens) else STOP_CONTEXT if budget < asked and len(
            clock.tokens) >= budget else STOP_MAX_NEW
        timing.extra.update(stop_record(stop, timing.tokens_in, len(clock.tokens), asked, self.context_length))
        return Generation(text=text, token_ids=ids, timing=timing)

    def _timing(self, inputs: dict, clock: _TokenClock, t_call: float, t_pre: float, t_end: float) -> Timing:
        n_out = len(clock.tokens)
        n_in = int(inputs["input_ids"].shape[1])
        first = clock.token_at[0] if n_out else t_end
        start = clock.prompt_at if clock.prompt_at is not None else t_pre
        vision_ms = sum(b - a for a, b in self._vision_spans) * 1000
        # transformers 5.23 encodes images before handing over the prompt; older paths do it inside
        # the prefill forward: subtract only the vision time that fell inside [start, first]
        inside = sum(max(0.0, min(b, first) - max(a, start)) for a, b in self._vision_spans) * 1000
        prefill_ms = max((first - start) * 1000 - inside, 0.0)
        decode_ms = (clock.token_at[-1] - first) * 1000 if n_out > 1 else 0.0
        per_token = decode_ms / (n_out - 1) if n_out > 1 else 0.0
        return Timing(
            load_ms=self.load_ms,
            preprocess_ms=(t_pre - t_call) * 1000,
            vision_encode_ms=vision_ms,
            prefill_ms=prefill_ms,
            prefill_tok_s=n_in / (prefill_ms / 1000) if prefill_ms > 0 else 0.0,
            ttft_ms=(first - t_call) * 1000,
            decode_ms_per_token=per_token,
            decode_tok_s=1000 / per_token if per_token > 0 else 0.0,
            e2e_ms=(t_end - t_call) * 1000,
            tokens_in=n_in,
            tokens_out=n_out,
            peak_rss_mb=sysinfo.peak_rss_mb(),
            extra={"threads": self.threads, "device": self.placement.device,
                   "dtype": str(self.model.dtype).replace("torch.", ""), "dtype_reason": self.placement.reason,
                   "generate_overhead_ms": max((start - t_pre) * 1000 - (vision_ms - inside), 0.0),
                   "how": TIMING_DEFINITION + "; here each token's stamp is taken by a streamer in generate()'s "
                          "thread; with stream=True the consumer thread detokenises concurrently (not subtracted)",
                   **self._gpu_memory()},
        )

    def _gpu_memory(self) -> dict:
        """CUDA only: the peak memory torch allocated during this request (MiB)."""
        if self.placement.device != "cuda":
            return {}
        return {"gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def _load_model(path: str, place: Placement):
    """The model in `place.dtype`, straight onto `place.device` (accelerate's device_map on CUDA, so an
    8B bf16 model never sits in host memory as a whole)."""
    where = {"device_map": place.device} if place.device == "cuda" else {}
    check_safetensors_dir(path)  # a truncated/garbage file: CorruptFileError naming it, not SafetensorError
    try:
        return AutoModelForImageTextToText.from_pretrained(path, dtype=place.torch_dtype, **where).eval()
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        raise RuntimeError_(f"cannot load {path} as an image-text-to-text model: {exc}") from None
    except torch.cuda.OutOfMemoryError:
        raise RuntimeError_(f"{path} does not fit in GPU memory as {place.dtype}: try --dtype bf16 or fp16, "
                            "or --device cpu") from None


def _load_processor(path: str):
    if not Path(path).is_dir():
        raise RuntimeError_(f"model dir not found: {path}")
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError_(f"cannot load the processor of {path}: {exc}") from None
    if not hasattr(processor, "image_processor"):
        # e.g. a processor whose video processor needs torchvision: Auto falls back to the tokenizer
        raise RuntimeError_(f"{path}: AutoProcessor returned {type(processor).__name__}, not an image processor "
                            "pipeline (is torchvision installed? is preprocessor_config.json present?)")
    return processor
