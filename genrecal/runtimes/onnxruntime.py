"""ONNX Runtime backend for a genrecal ONNX artifact dir (onnx-community layout).

    from genrecal.runtimes.onnxruntime import OnnxRuntime
    rt = OnnxRuntime("out/onnx-int8", threads=4)
    print(rt.generate([image], "What shape is in the image?").text)

The dir is opened by its manifest: every file's sha256 is verified first, so a modified graph is
refused. The loop: processor -> vision_encoder -> embed_tokens -> image features written into the
image-token rows -> decoder prefill with an empty cache -> greedy decode with the KV cache.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from genrecal.artifacts.manifest import Manifest, load_manifest
from genrecal.artifacts.onnx_facts import OnnxFacts
from genrecal.artifacts.onnx_feeds import mrope_decode_ids, rope_index, vision_feeds
from genrecal.runtimes.base import (
    STOP_CONTEXT, STOP_EOS, STOP_MAX_NEW, TIMING_DEFINITION, DecodeClock, Generation, RuntimeError_, Stream, Timing,
    config_context_length, new_token_budget, stop_record,
)
from genrecal.runtimes.prompt import load_processor, prepare_inputs
from genrecal.runtimes.ort_kv_cache import ArrayKvCache, SharedKvCache
from genrecal.runtimes.sysinfo import peak_rss_mb


@dataclass
class Trace:
    """Greedy (or teacher-forced) run: per-step logits and the tokens taken."""

    prefill_logits: np.ndarray  # [L, V], every prompt position
    step_logits: list[np.ndarray] = field(default_factory=list)  # one [V] per token taken (step 0 = prefill)
    tokens: list[int] = field(default_factory=list)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class OnnxRuntime:
    """A Runtime (see runtimes/base.py) over `vision_encoder`, `embed_tokens`, `decoder_model_merged`."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 profile_prefix: str | None = None, share_kv_buffer: bool | None = None):
        """profile_prefix: write onnxruntime's profiler JSON for every session (`<prefix>_<role>_*.json`,
        on `end_profiling()`); for genrecal-bench peers --profile. share_kv_buffer: keep the KV cache in
        one buffer the decoder writes in place (ort_kv_cache.py); None = where the manifest says the
        decoder supports it (`past_present_share_buffer`, the model builder's GroupQueryAttention graph);
        True on a decoder without that fact is a RuntimeError_."""
        self.profile_prefix = profile_prefix
        t0 = time.perf_counter()
        self.path = str(path)
        self.manifest: Manifest = load_manifest(Path(path))  # verifies every checksum
        self.verify_ms = _ms(t0)  # not part of load_ms (base.TIMING_DEFINITION)
        t0 = time.perf_counter()
        if self.manifest.format != "onnx":
            raise RuntimeError_(f"{path} holds a {self.manifest.format!r} artifact, not ONNX")
        self.family = self.manifest.family
        self.precision = self.manifest.precision
        self.threads = threads
        self.facts = OnnxFacts.from_extra(self.manifest.extra)
        self.sessions = {role: self._session(Path(path) / name, threads, providers, role)
                         for role, name in self.facts.graphs.items()}
        self.processor = load_processor(self.path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.eos = set(self.facts.eos_token_ids)
        # a decoder whose attention derives positions from the mask has no position_ids input
        self._decoder_inputs = {i.name for i in self.sessions["decoder"].get_inputs()}
        supported = self.facts.past_present_share_buffer
        if share_kv_buffer and not supported:
            raise RuntimeError_(f"{path}: its decoder cannot share one KV buffer between past and present (only "
                                "the model builder's GroupQueryAttention decoder can: --onnx-decoder builder)")
        self.share_kv_buffer = supported if share_kv_buffer is None else share_kv_buffer
        # positions the decoder covers (the builder's GroupQueryAttention fails past its cos/sin cache)
        self.context_length = config_context_length(self.path)
        self.load_ms = _ms(t0)

    def _session(self, graph: Path, threads: int | None, providers, role: str = ""):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.profile_prefix:
            opts.enable_profiling, opts.profile_file_prefix = True, f"{self.profile_prefix}_{role}"
        opts.log_severity_level = 3  # errors only: constant-folding notices on fp16 graphs are noise
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # ORT_ENABLE_ALL can fuse RMSNorm into an fp16 kernel and widen fp16 error; BASIC keeps it
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if self.precision == "fp16"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        try:
            return ort.InferenceSession(str(graph), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types; say which graph
            raise RuntimeError_(f"onnxruntime cannot load {graph.name}: {str(exc).splitlines()[0]}") from None

    # ---- the pieces, public so parity checks can drive them ----
    def prepare(self, images: list, prompt: str) -> dict:
        """Chat template + processor -> numpy inputs (input_ids [1, L], pixel tensors, ...)."""
        return prepare_inputs(self.processor, images, prompt)

    def encode_images(self, enc: dict) -> np.ndarray | None:
        """image_features [n_image_tokens, D], or None for a text-only prompt."""
        if "pixel_values" not in enc:
            return None
        feeds = vision_feeds(self.facts.vision_feeds, enc, self.facts.vision_inputs)
        return self.sessions["vision"].run(None, feeds)[0]

    def embed(self, input_ids: np.ndarray, image_features: np.ndarray | None) -> np.ndarray:
        """inputs_embeds [1, L, D] with the image features in the image-token rows."""
        embeds = self.sessions["embed"].run(None, {"input_ids": input_ids.astype(np.int64)})[0]
        rows = input_ids[0] == self.facts.image_token_id
        n_rows = int(rows.sum())
        n_feats = 0 if image_features is None else image_features.shape[0]
        if n_rows != n_feats:
            raise RuntimeError_(f"the prompt has {n_rows} image tokens but the vision encoder gave {n_feats} "
                                "features (processor and graphs disagree; re-export)")
        if n_rows:
            embeds[0, rows] = image_features.astype(embeds.dtype)
        return embeds

    def position_ids(self, enc: dict) -> tuple[np.ndarray, np.ndarray]:
        """Prefill ids ([1, L] or M-RoPE [3, 1, L]) and the decode offset per row ([1, 1])."""
        ids = enc["input_ids"]
        if not self.facts.mrope:
            return np.arange(ids.shape[1], dtype=np.int64)[None], np.zeros((1, 1), dtype=np.int64)
        return rope_index(ids, enc.get("image_grid_thw"), None, self.facts.image_token_id,
                          self.facts.spatial_merge_size)

    def _kv_cache(self, max_length: int):
        """The decoder's KV cache for one generation (ort_kv_cache.py): one shared, in-place buffer where
        the decoder supports it and share_kv_buffer allows, else arrays passed in and out."""
        session = self.sessions["decoder"]
        shape = (self.facts.num_layers, self.facts.num_kv_heads, self.facts.head_dim)
        if self.share_kv_buffer:
            return SharedKvCache(session, *shape, max_length=max_length)
        return ArrayKvCache(session, *shape, self.facts.layer_types, self.facts.linear_state_shapes)

    def _decoder_step(self, cache, embeds: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """logits [1, L, V] for `embeds` [1, L, D] at positions `pos`; the cache grows by L."""
        total = cache.length + embeds.shape[1]
        feeds = {"inputs_embeds": embeds.astype(np.float32), "attention_mask": np.ones((1, total), np.int64),
                 "position_ids": pos.astype(np.int64)}
        return cache.step({k: v for k, v in feeds.items() if k in self._decoder_inputs})

    def steps(self, enc: dict, max_new_tokens: int, forced: list[int] | None = None,
              clock: dict | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """Yield (token, last-position logits [V], prefill logits [L, V] on the first step only).

        Greedy unless `forced` gives the tokens to feed (teacher forcing); stops after an EOS, or at the
        model's context (prompt + new tokens <= context_length, base.new_token_budget; ContextFullError
        before anything runs when the prompt alone fills it). `clock` (optional) receives vision_ms /
        prefill_ms timestamps and the stop reason (base.STOP_*).
        """
        clock = {} if clock is None else clock
        ids = enc["input_ids"].astype(np.int64)
        limit = max_new_tokens if forced is None else min(max_new_tokens, len(forced))
        budget = new_token_budget(ids.shape[1], limit, self.context_length, self.path)
        clock["stop"] = STOP_MAX_NEW if budget == limit else STOP_CONTEXT  # until an EOS says otherwise
        limit = budget
        t0 = time.perf_counter()
        feats = self.encode_images(enc)
        clock["vision_ms"] = _ms(t0)
        t0 = time.perf_counter()
        pos, delta = self.position_ids(enc)
        cache = self._kv_cache(max_length=ids.shape[1] + limit)
        logits = self._decoder_step(cache, self.embed(ids, feats), pos)
        clock["prefill_ms"] = _ms(t0)
        prefill = logits[0]
        for i in range(limit):
            last = logits[0, -1]
            token = int(last.argmax()) if forced is None else int(forced[i])
            yield token, last, prefill
            prefill = None
            if forced is None and token in self.eos:
                clock["stop"] = STOP_EOS
                return
            if i + 1 == limit:
                return
            step_pos = (mrope_decode_ids(cache.length, delta) if self.facts.mrope
                        else np.full((1, 1), cache.length, np.int64))
            # a generated token is text whatever its id: a model that emits its image token (random tiny
            # ones do) gets that token's embedding row, as in PyTorch and the TensorRT runtime
            embeds = self.sessions["embed"].run(None, {"input_ids": np.array([[token]], np.int64)})[0]
            logits = self._decoder_step(cache, embeds, step_pos)

    def logits_for(self, enc: dict, max_new_tokens: int = 16, forced: list[int] | None = None) -> Trace:
        """Per-step logits of a greedy (or teacher-forced) run, for parity checks."""
        trace = None
        for token, last, prefill in self.steps(enc, max_new_tokens, forced):
            trace = trace or Trace(prefill_logits=prefill)
            trace.step_logits.append(last)
            trace.tokens.append(token)
        return trace

    # ---- the Runtime API ----
    def generate(self, images: list, prompt: str, max_new_tokens: int = 32,
                 stream: bool = False) -> Generation | Stream:
        pieces = self._generate(images, prompt, max_new_tokens, stream)
        if stream:
            return Stream(pieces)
        while True:
            try:
                next(pieces)
            except StopIteration as stop:
                return stop.value

    def _generate(self, images, prompt, max_new_tokens, stream: bool = True) -> Iterator[str]:
        decode = DecodeClock()
        start = decode.start
        enc = self.prepare(images, prompt)
        timing = Timing(load_ms=self.load_ms, preprocess_ms=_ms(start), tokens_in=int(enc["input_ids"].shape[1]))
        clock, tokens, said = {}, [], ""
        for token, _, _ in self.steps(enc, max_new_tokens, clock=clock):
            decode.token()
            tokens.append(token)
            if not stream:
                continue
            with decode.paused():  # detokenising and the consumer's time are not decoding
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                # yield only growth of what was shown: wait for whole UTF-8 characters, and for
                # decoders that rewrite earlier text (WordPiece joins "##" pieces) to settle
                if text.startswith(said) and len(text) > len(said) and not text.endswith("\ufffd"):
                    yield text[len(said):]
                    said = text
        end = time.perf_counter()
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if text.startswith(said) and len(text) > len(said):
            yield text[len(said):]
        timing.vision_encode_ms, timing.prefill_ms = clock.get("vision_ms", 0.0), clock.get("prefill_ms", 0.0)
        timing.prefill_tok_s = timing.tokens_in / max(timing.prefill_ms / 1000.0, 1e-9)
        timing.ttft_ms = decode.ttft_ms
        timing.tokens_out = len(tokens)
        if len(tokens) > 1:
            timing.decode_ms_per_token = decode.decode_ms_per_token
            timing.decode_tok_s = 1000.0 / max(timing.decode_ms_per_token, 1e-9)
        timing.e2e_ms = (end - start) * 1000.0
        timing.peak_rss_mb = peak_rss_mb()
        timing.extra = {"threads": self.threads, "precision": self.precision, "family": self.family,
                        "verify_ms": self.verify_ms, "how": TIMING_DEFINITION,
                        **stop_record(clock.get("stop", STOP_MAX_NEW), timing.tokens_in, len(tokens), max_new_tokens,
                                      self.context_length)}
        return Generation(text=text, token_ids=tokens, timing=timing)
