"""One text-decoding interface over every runtime the peers benchmark compares, timed by one rule.

    d = open_driver("onnxruntime", "EXPORT/onnx-int4", threads=2)   # or genai, llamacpp, torch
    logits = d.text_logits(ids)            # ids [L] int64 -> [L, V] float32, one teacher-forced prefill
    run = d.greedy(prompt_ids, 64)         # DecodeRun: tokens, ttft_ms, decode_ms_per_token
    d.close()

Timing follows genrecal.runtimes.base.TIMING_DEFINITION (DecodeClock): wall clock, TTFT from the call
to the first new token's id, decode = first to last token id / (n - 1), no detokenisation anywhere
(the benchmark feeds and reads token ids). Each driver runs its runtime's own decode loop: genrecal's
onnxruntime backend (`OnnxRuntime.steps`: embed graph + decoder graph per token, numpy KV cache),
onnxruntime-genai's `Generator`, llama-cpp-python's `Llama.eval`, transformers' `generate`. Greedy
decoding stops at the model's end-of-sequence token, like each runtime does for a user.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genrecal.runtimes.base import DecodeClock, RuntimeError_

RUNTIMES = ("onnxruntime", "genai", "llamacpp", "torch")


@dataclass
class DecodeRun:
    tokens: list[int]
    ttft_ms: float  # prefill of the prompt + the first token's id
    decode_ms_per_token: float  # 0.0 with fewer than 2 tokens
    extra: dict = field(default_factory=dict)


def _clocked(start: float, step, first_logits, n: int, is_eos) -> DecodeRun:
    """Greedy loop shared by the drivers whose runtimes hand out logits: `step(token)` feeds one token
    and returns the next logits [V]."""
    clock, tokens = DecodeClock(start), []
    logits = first_logits
    while len(tokens) < n:
        token = int(np.argmax(logits))
        clock.token()  # an end-of-sequence token's step counts (runtimes.base.TIMING_DEFINITION)
        if is_eos(token):
            break
        tokens.append(token)
        if len(tokens) < n:
            logits = step(token)
    return DecodeRun(tokens, clock.ttft_ms, clock.decode_ms_per_token)


def _timed(tokens_in, n: int, eos) -> DecodeRun:
    """Greedy loop shared by the drivers whose runtimes pick the tokens: `tokens_in` yields token ids as
    the runtime produces them (the clock starts when this is called, before the first is asked for)."""
    clock, tokens = DecodeClock(), []
    for token in tokens_in:
        clock.token()
        if token in eos:
            break
        tokens.append(token)
        if len(tokens) >= n:
            break
    return DecodeRun(tokens, clock.ttft_ms, clock.decode_ms_per_token)


class OnnxDriver:
    """genrecal's onnxruntime backend on a genrecal ONNX artifact dir (text-only prompts)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int):
        from genrecal.runtimes.onnxruntime import OnnxRuntime

        self.rt = OnnxRuntime(path, threads=threads)
        self.load_ms, self.verify_ms = self.rt.load_ms, self.rt.verify_ms

    def text_logits(self, ids: np.ndarray) -> np.ndarray:
        return self.rt.logits_for({"input_ids": ids[None].astype(np.int64)}, 1).prefill_logits

    def greedy(self, ids: np.ndarray, n: int) -> DecodeRun:
        steps = self.rt.steps({"input_ids": ids[None].astype(np.int64)}, n)
        return _timed((token for token, _, _ in steps), n, self.rt.eos)

    def close(self) -> None:
        self.rt = None


class GenaiDriver:
    """onnxruntime-genai's own generator on a folder its model builder wrote (genai_config.json)."""

    runtime = "genai"

    def __init__(self, path: Path, threads: int):
        import onnxruntime_genai as og

        t0 = time.perf_counter()
        config = og.Config(str(path))
        options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        self.og, self.model = og, og.Model(config)
        self.load_ms, self.verify_ms = (time.perf_counter() - t0) * 1e3, 0.0
        eos = json.loads((Path(path) / "genai_config.json").read_text())["model"]["eos_token_id"]
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def _generator(self, max_length: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=max_length, batch_size=1)
        return self.og.Generator(self.model, params)

    def text_logits(self, ids: np.ndarray) -> np.ndarray:
        gen = self._generator(len(ids) + 1)
        gen.append_tokens(ids.astype(np.int32))
        return np.asarray(gen.get_output("logits"))[0].astype(np.float32)  # [L, V]

    def greedy(self, ids: np.ndarray, n: int) -> DecodeRun:
        def tokens():
            gen = self._generator(len(ids) + n + 1)  # it is done at max_length: one spare position
            gen.append_tokens(ids.astype(np.int32))  # prefill
            while True:
                gen.generate_next_token()  # the model on the last token (after the prefill: none), greedy pick
                yield int(gen.get_next_tokens()[0])

        return _timed(tokens(), n, self.eos)

    def close(self) -> None:
        self.model = None


class LlamaDriver:
    """llama-cpp-python on one text GGUF: llama.cpp's default F16 KV cache, as a user runs it, or an F32 one
    (`kv_f32`: logits compared across files without the cache's rounding)."""

    runtime = "llamacpp"
    N_CTX = 1024

    def __init__(self, path: Path, threads: int, kv_f32: bool = False):
        import llama_cpp

        from genrecal.runtimes import llamacpp_smoke

        llamacpp_smoke.ensure_decodes(Path(path), threads)  # a native crash becomes one clear line
        self.lc, self.path, self.threads, self.kv_f32 = llama_cpp, Path(path), threads, kv_f32
        t0 = time.perf_counter()
        self.llm = self._open(logits_all=False)
        self.load_ms, self.verify_ms = (time.perf_counter() - t0) * 1e3, 0.0
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)

    def _open(self, logits_all: bool):
        from llama_cpp import Llama

        kv = {"type_k": 0, "type_v": 0} if self.kv_f32 else {}  # ggml type 0: F32
        return Llama(str(self.path), n_ctx=self.N_CTX, n_threads=self.threads, n_threads_batch=self.threads,
                     n_batch=512, logits_all=logits_all, n_gpu_layers=0, verbose=False, **kv)

    def _last_logits(self) -> np.ndarray:
        ptr = self.lc.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).copy()

    def text_logits(self, ids: np.ndarray) -> np.ndarray:
        llm = self._open(logits_all=True)
        try:
            llm.eval([int(i) for i in ids])
            return np.array(llm.scores[: len(ids)], dtype=np.float32)
        finally:
            llm.close()

    def greedy(self, ids: np.ndarray, n: int) -> DecodeRun:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        start = time.perf_counter()
        self.llm.eval([int(i) for i in ids])

        def step(token: int) -> np.ndarray:
            self.llm.eval([token])
            return self._last_logits()

        eos = lambda t: bool(self.lc.llama_vocab_is_eog(self.vocab, t))  # noqa: E731
        return _clocked(start, step, self._last_logits(), n, eos)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
        self.llm = None


class TorchDriver:
    """transformers' generate() on the text model in fp32 (the PyTorch eager reference)."""

    runtime = "torch"

    def __init__(self, path: Path, threads: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        self.torch, self.threads = torch, threads
        t0 = time.perf_counter()
        # an M-RoPE student's text source is a VLM shell (peer_builds.text_source): text-only prompts give 1-D ids
        vlm = json.loads((Path(path) / "config.json").read_text())["architectures"][0].endswith("ForConditionalGeneration")
        auto = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
        self.model = auto.from_pretrained(path, dtype=torch.float32).eval()
        self.load_ms, self.verify_ms = (time.perf_counter() - t0) * 1e3, 0.0
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) - {None}

    def text_logits(self, ids: np.ndarray) -> np.ndarray:
        self.torch.set_num_threads(self.threads)
        with self.torch.inference_mode():
            return self.model(input_ids=self.torch.from_numpy(ids[None])).logits[0].float().numpy()

    def greedy(self, ids: np.ndarray, n: int) -> DecodeRun:
        from transformers.generation.streamers import BaseStreamer

        clock, eos = DecodeClock(), self.eos

        class Stamp(BaseStreamer):  # called in generate()'s loop right after each token is chosen
            tokens: list[int] = []
            prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                token = int(value.reshape(-1)[0])
                clock.token()
                if token not in eos:
                    self.tokens.append(token)

            def end(self):
                pass

        stamp = Stamp()
        stamp.tokens = []
        self.torch.set_num_threads(self.threads)
        with self.torch.inference_mode():
            self.model.generate(self.torch.from_numpy(ids[None]), attention_mask=self.torch.ones(1, len(ids),
                                dtype=self.torch.long), max_new_tokens=n, do_sample=False, streamer=stamp,
                                eos_token_id=sorted(eos) or None, pad_token_id=sorted(eos)[0] if eos else None)
        return DecodeRun(stamp.tokens, clock.ttft_ms, clock.decode_ms_per_token)

    def close(self) -> None:
        self.model = None


DRIVERS = {"onnxruntime": OnnxDriver, "genai": GenaiDriver, "llamacpp": LlamaDriver, "torch": TorchDriver}


def open_driver(runtime: str, path: Path, threads: int):
    """A driver for `runtime` on `path` with `threads` CPU threads; RuntimeError_ for an unknown runtime."""
    if runtime not in DRIVERS:
        raise RuntimeError_(f"no peers driver for runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return DRIVERS[runtime](Path(path), threads)
