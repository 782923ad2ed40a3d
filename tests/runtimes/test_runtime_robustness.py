"""Prompts past the model's context, and model files that lie, in every runtime and `genrecal-bench latency`.

    python -m pytest tests/runtimes/test_runtime_robustness.py -q

The rule (runtimes.base.new_token_budget, docs/robustness.md): prompt + new tokens <= the model's
context in torch, onnxruntime (genrecal's TorchScript decoder and the model builder's
GroupQueryAttention decoder) and llama.cpp alike; a generation that reaches it stops there with
stop="context" and a sentence saying so; a prompt that fills it alone is one ContextFullError line
before anything runs. The tiny models' context is 1024 tokens.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from genrecal import runtimes
from genrecal.runtimes.base import ContextFullError

CONTEXT = 1024  # the zoo's max_position_embeddings
RUNTIMES = ["torch", "onnx-builder", "onnx-torchscript", "gguf"]


@pytest.fixture(scope="module")
def artifact(student, exported, tmp_path_factory):
    """artifact(kind) -> the tiny smolvlm as a dir that `kind`'s runtime runs."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            if kind == "torch":
                made[kind] = Path(student)
            elif kind == "gguf":
                made[kind] = exported("gguf", "f16")
            else:
                pytest.importorskip("onnxruntime")
                from genrecal.export.onnx import OnnxBuild

                decoder = kind.split("-")[1]
                if decoder == "builder":
                    pytest.importorskip("onnxruntime_genai", reason="the model builder comes with onnxruntime-genai")
                root = tmp_path_factory.mktemp(kind)
                OnnxBuild(Path(student), root / ".work", check=False, threads=1, decoder=decoder).build(
                    root / "onnx-fp32", "fp32", "cpu")
                made[kind] = root / "onnx-fp32"
        return made[kind]

    return get


def _question(words: int) -> str:
    return "what is the shape " * words


@pytest.mark.parametrize("kind", RUNTIMES)
def test_generation_stops_at_the_context(artifact, image, kind):
    rt = runtimes.load(artifact(kind), threads=1)
    if kind == "onnx-builder":
        assert rt.facts.past_present_share_buffer  # the GroupQueryAttention decoder (cos/sin cache of 1024 rows)
    gen = rt.generate([image], _question(150), max_new_tokens=2000)
    t = gen.timing
    assert t.extra["stop"] == "context" and t.extra["context_length"] == CONTEXT, t.extra
    assert t.tokens_in + len(gen.token_ids) == CONTEXT
    assert t.extra["stop_note"].startswith(f"stopped at the model's context of {CONTEXT} tokens: the prompt's "
                                           f"{t.tokens_in} tokens + {len(gen.token_ids)} new ones")
    short = rt.generate([image], _question(150), max_new_tokens=3)
    assert short.timing.extra["stop"] in ("max_new_tokens", "eos") and "stop_note" not in short.timing.extra


@pytest.mark.parametrize("kind", RUNTIMES)
def test_a_prompt_that_fills_the_context_is_one_line(artifact, image, kind):
    rt = runtimes.load(artifact(kind), threads=1)
    with pytest.raises(ContextFullError) as err:
        rt.generate([image], _question(400), max_new_tokens=4)
    message = str(err.value)
    assert "\n" not in message and f"the model's context holds {CONTEXT}" in message, message
    assert message.split(": ", 1)[1].startswith("the prompt takes 2035 tokens")  # the same count in every runtime


@pytest.mark.parametrize("kind", ["torch", "onnx-builder", "gguf"])
def test_bench_latency_past_the_context(bench, artifact, image, tmp_path, kind):
    image.save(tmp_path / "image.png")
    common = ["latency", "--artifact", artifact(kind), "--threads", "1", "--warmup", "0", "--runs", "1",
              "--no-bandwidth", "--image", tmp_path / "image.png"]
    code, out, err = bench(*common, "--prompt", _question(180), "--max-new-tokens", "2000")
    assert code == 0 and "Traceback" not in err, err
    assert f"warning: stopped at the model's context of {CONTEXT} tokens" in out, out
    code, out, err = bench(*common, "--prompt", _question(400))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert f"the model's context holds {CONTEXT}" in err


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_bench_on_damaged_weights_names_the_file(bench, student, tmp_path, how):
    model = tmp_path / "model"
    shutil.copytree(student, model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3] if how == "truncated" else os.urandom(2048))
    code, out, err = bench("latency", "--artifact", model, "--threads", "1", "--runs", "1", "--no-bandwidth")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and str(weights) in err and "not a valid safetensors file" in err, err
