"""One small API over every backend (torch, onnxruntime, llama.cpp, TensorRT).

`runtimes.load(path)` returns an object satisfying `Runtime`; `generate` gives a `Generation`
(text, token ids, `Timing`), or with `stream=True` a `Stream` that yields text pieces and holds the
final `Generation` in `.result` once exhausted. Metric names follow llama.cpp / ORT-genai usage.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from PIL import Image

from genrecal.errors import GenrecalError


class RuntimeError_(GenrecalError):
    """A backend that cannot load or run an artifact (missing library, bad image, ...)."""


# The one timing definition every runtime (torch, onnxruntime, llama.cpp, TensorRT) and the peers
# benchmark follow; results carry it as `timing_definition`.
TIMING_DEFINITION = (
    "wall clock (time.perf_counter) in the calling process. decode_ms_per_token = (time the last new token's "
    "id is known - time the first one's is known) / (new tokens - 1), an end-of-sequence token counted as a new "
    "token: every per-token cost of the runtime "
    "(model call, KV cache handling, argmax, its Python loop) is in, detokenisation is out (text is decoded "
    "after the last token; a streaming consumer's detokenise-and-yield time is subtracted). ttft_ms = from "
    "the generate() call to the first new token's id. load_ms = constructing the runtime until it can "
    "generate, excluding the artifact's sha256 verification (verify_ms) and genrecal's llama.cpp smoke "
    "decode in a child process (smoke_ms)")


class ContextFullError(RuntimeError_):
    """A prompt that leaves no room in the model's context for a new token."""


# Every runtime ends a generation for one of these reasons (Timing.extra["stop"]).
STOP_EOS, STOP_MAX_NEW, STOP_CONTEXT = "eos", "max_new_tokens", "context"


def new_token_budget(tokens_in: int, max_new_tokens: int, context: int | None, where: str) -> int:
    """How many new tokens a generation may take: max_new_tokens, or fewer where the prompt plus them
    would pass the model's context, so that prompt + new tokens <= context in every runtime (torch,
    onnxruntime, llama.cpp, TensorRT); the generation then stops there with stop="context".
    ContextFullError (one line, before anything runs) when the prompt alone leaves no room."""
    if not context or context <= 0:
        return max_new_tokens
    if tokens_in >= context:
        raise ContextFullError(
            f"{where}: the prompt takes {tokens_in} tokens (image tokens included) and the model's context holds "
            f"{context}, which leaves no room for an answer: shorten the question or send fewer/smaller images")
    return min(max_new_tokens, context - tokens_in)


def config_context_length(root: str | os.PathLike) -> int | None:
    """The text model's max_position_embeddings from the config.json an artifact dir ships (None: not there)."""
    try:
        config = json.loads((Path(root) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for section in (config.get("text_config") or {}, config.get("llm_config") or {}, config):
        value = section.get("max_position_embeddings") if isinstance(section, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def stop_record(stop: str, tokens_in: int, new_tokens: int, max_new_tokens: int, context: int | None) -> dict:
    """Timing.extra's stop fields: the reason, the context, and for a stop at the context a sentence saying so."""
    record = {"stop": stop, "context_length": context}
    if stop == STOP_CONTEXT:
        record["stop_note"] = (f"stopped at the model's context of {context} tokens: the prompt's {tokens_in} tokens "
                               f"+ {new_tokens} new ones; max_new_tokens {max_new_tokens} asked for more")
    return record


class DecodeClock:
    """Stamps for TIMING_DEFINITION: `token()` when each new token's id is known; wrap work that is not
    decoding (detokenisation, yielding to a streaming consumer) in `with clock.paused():`."""

    def __init__(self, start: float | None = None):
        self.start = time.perf_counter() if start is None else start
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0
        self.excluded_s = 0.0  # paused time between the first and the last token
        self._pending_s = 0.0  # paused since the last token: counts once another token follows

    def token(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.excluded_s += self._pending_s
        self._pending_s = 0.0
        self.last = now
        self.count += 1

    @contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._pending_s += time.perf_counter() - t0

    @property
    def ttft_ms(self) -> float:
        return (self.first - self.start) * 1e3 if self.first is not None else 0.0

    @property
    def decode_ms_per_token(self) -> float:
        """ms per new token after the first (0.0 with fewer than 2 tokens)."""
        if self.count < 2:
            return 0.0
        return (self.last - self.first - self.excluded_s) * 1e3 / (self.count - 1)


@dataclass
class Timing:
    load_ms: float = 0.0
    preprocess_ms: float = 0.0  # image processor + tokenizer
    vision_encode_ms: float = 0.0  # vision tower + projector
    prefill_ms: float = 0.0  # first decoder pass over the prompt
    prefill_tok_s: float = 0.0
    ttft_ms: float = 0.0  # from generate() call to the first new token
    decode_ms_per_token: float = 0.0
    decode_tok_s: float = 0.0
    e2e_ms: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    timing: Timing


class Stream:
    """Iterate for text pieces; `.result` is the Generation once the iterator is exhausted."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        result = yield from self._pieces
        self.result = result


@runtime_checkable
class Runtime(Protocol):
    name: str  # "torch" | "onnxruntime" | "llamacpp" | "tensorrt"
    family: str  # student/teacher model_type
    path: str

    def generate(self, images: list[Image.Image], prompt: str, max_new_tokens: int = 32,
                 stream: bool = False) -> Generation | Stream:
        """Greedy generation for one user turn: `prompt` is the question text; the runtime applies
        the model's own chat template and image markup."""
        ...
