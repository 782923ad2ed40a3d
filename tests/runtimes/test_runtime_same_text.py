"""Same prompt -> same greedy text on every backend for full-precision artifacts.

torch (the HF student) vs onnxruntime (ONNX fp32) vs llama.cpp (GGUF F16, llama.cpp's default F16
KV cache). Skipped with a reason while an exporter is not importable; must pass once it is.
Quantised artifacts are not compared here (they legitimately change tokens; their accuracy is).
"""
from __future__ import annotations

import pytest
import torch

from genrecal import runtimes
from genrecal.data import load_easy_vqa_questions

FULL_PRECISION = [("onnx", "fp32", "onnxruntime"), ("gguf", "f16", "llamacpp")]
MAX_NEW = 8


def clean(text: str) -> str:
    """Text without U+FFFD: random tiny models emit lone UTF-8 byte tokens, which a backend may
    render as a replacement character, hold back or drop; the token ids are compared exactly."""
    return text.replace("\ufffd", "").strip()


def _stop_stripped(gen, eos: set[int]) -> list[int]:
    ids = list(gen.token_ids)
    while ids and ids[-1] in eos:
        ids.pop()
    return ids


@pytest.fixture(scope="module")
def reference(student, image):
    """(requests, torch generations): the fixture image + 3 easy-vqa test questions."""
    before = torch.get_num_threads()
    rt = runtimes.load(student, threads=1)
    torch.set_num_threads(before)
    requests = [(image, "What shape is in the image?")]
    requests += [(str(path), q) for q, _a, path in load_easy_vqa_questions("test", limit=3, seed=0)]
    eos = {rt.tokenizer.eos_token_id}
    return requests, [rt.generate([im], q, MAX_NEW) for im, q in requests], eos


@pytest.mark.parametrize("fmt, precision, runtime", FULL_PRECISION, ids=[f"{f}-{p}" for f, p, _ in FULL_PRECISION])
def test_same_greedy_text_as_torch(fmt, precision, runtime, exported, reference):
    artifact = exported(fmt, precision)
    requests, expected, eos = reference
    rt = runtimes.load(artifact, threads=1)
    assert rt.name == runtime
    for (im, question), ref in zip(requests, expected):
        gen = rt.generate([im], question, MAX_NEW)
        assert _stop_stripped(gen, eos) == _stop_stripped(ref, eos), f"{fmt}-{precision} diverged on {question!r}"
        assert clean(gen.text) == clean(ref.text)
        assert gen.timing.tokens_out == ref.timing.tokens_out


@pytest.mark.parametrize("fmt, precision, runtime", FULL_PRECISION, ids=[f"{f}-{p}" for f, p, _ in FULL_PRECISION])
def test_streams_match_on_every_backend(fmt, precision, runtime, exported, image):
    rt = runtimes.load(exported(fmt, precision), threads=1)
    plain = rt.generate([image], "What colour is the shape?", MAX_NEW)
    stream = rt.generate([image], "What colour is the shape?", MAX_NEW, stream=True)
    assert clean("".join(stream)) == clean(plain.text) and stream.result.text == plain.text
