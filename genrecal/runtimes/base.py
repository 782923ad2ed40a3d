"""One small API over every backend (torch, onnxruntime, llama.cpp, TensorRT).

`runtimes.load(path)` returns an object satisfying `Runtime`; `generate` gives a `Generation`
(text, token ids, `Timing`), or with `stream=True` a `Stream` that yields text pieces and holds the
final `Generation` in `.result` once exhausted. Metric names follow llama.cpp / ORT-genai usage.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator, Protocol, runtime_checkable

from PIL import Image

from genrecal.errors import GenrecalError


class RuntimeError_(GenrecalError):
    """A backend that cannot load or run an artifact (missing library, bad image, ...)."""


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
