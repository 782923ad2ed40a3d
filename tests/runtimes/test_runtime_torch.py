"""TorchRuntime: greedy text equal to transformers' own generate, every timing field, streaming, threads.

    python -m pytest tests/runtimes -q
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from genrecal import runtimes
from genrecal.runtimes.base import Generation, Runtime, Stream, Timing
from genrecal.runtimes.torch_runtime import TorchRuntime

QUESTION = "What shape is in the image?"


@pytest.fixture(scope="module")
def rt(student):
    before = torch.get_num_threads()
    yield TorchRuntime(student, threads=1)
    torch.set_num_threads(before)


def test_load_picks_torch_for_an_hf_dir_and_satisfies_the_protocol(student):
    before = torch.get_num_threads()
    try:
        rt = runtimes.load(student, threads=1)
    finally:
        torch.set_num_threads(before)
    assert isinstance(rt, TorchRuntime) and isinstance(rt, Runtime)
    assert rt.name == "torch" and rt.family == "smolvlm" and rt.threads == 1 and rt.load_ms > 0


def test_greedy_ids_equal_transformers_generate(rt, student, image):
    gen = rt.generate([image], QUESTION, max_new_tokens=8)
    model = AutoModelForImageTextToText.from_pretrained(student).eval()
    processor = AutoProcessor.from_pretrained(student)
    content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = processor(text=[prompt], images=[[image]], return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    eos = processor.tokenizer.eos_token_id
    ref_ids = [t for t in ref.tolist() if t != eos]
    assert gen.token_ids == ref_ids
    assert gen.text == processor.tokenizer.decode(ref_ids, skip_special_tokens=True).strip()


def test_every_timing_field_is_measured(rt, image):
    gen = rt.generate([image], QUESTION, max_new_tokens=8)
    assert isinstance(gen, Generation)
    t = gen.timing.as_dict()
    assert set(t) == {f.name for f in dataclasses.fields(Timing)}
    for name, value in t.items():
        if name != "extra":
            assert value > 0, f"{name} was not measured"
    assert gen.timing.tokens_out == 8 and gen.timing.tokens_in > 16  # 16 image tokens + the question
    # phases nest: TTFT covers preprocess + vision + prefill; end-to-end covers TTFT + decode
    assert t["ttft_ms"] >= t["preprocess_ms"] + t["vision_encode_ms"] + t["prefill_ms"] - 1e-6
    assert t["e2e_ms"] >= t["ttft_ms"] + t["decode_ms_per_token"] * (t["tokens_out"] - 1) - 1e-6
    assert t["extra"]["threads"] == 1


def test_stream_yields_the_same_text_and_a_result(rt, image):
    plain = rt.generate([image], QUESTION, max_new_tokens=8)
    stream = rt.generate([image], QUESTION, max_new_tokens=8, stream=True)
    assert isinstance(stream, Stream)
    pieces = list(stream)
    assert len(pieces) >= 2 and "".join(pieces).strip() == plain.text
    assert stream.result.token_ids == plain.token_ids and stream.result.timing.decode_tok_s > 0


def test_text_only_prompt_runs_without_vision(rt):
    gen = rt.generate([], "Describe the picture in one sentence.", max_new_tokens=4)
    assert gen.timing.vision_encode_ms == 0 and gen.timing.tokens_out == 4


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_other_families_time_their_vision_tower(family, zoo_dir, image):
    before = torch.get_num_threads()
    try:
        gen = TorchRuntime(zoo_dir(family), threads=1).generate([image], QUESTION, max_new_tokens=4)
    finally:
        torch.set_num_threads(before)
    assert gen.timing.vision_encode_ms > 0 and gen.timing.prefill_ms > 0 and gen.timing.tokens_out == 4
