"""The zoo's Qwen2-VL tokenizer on the real Qwen2 vocabulary (llama.cpp's ggml-vocab-qwen2.gguf from the
llama-cpp-python sdist): image tokens land on Qwen2-VL's real ids, not appended after 151,936, and a chat
prompt tokenises to Qwen2's ids (single digits, "user" 872, "\\n" 198).
The 2B-shaped teacher of `genrecal-bench distill-scale` is built on this tokenizer.

    .venv/bin/python -m pytest tests/families/test_real_vocab.py -q     (~15 s: 151k merges)
"""
from __future__ import annotations

import pytest

from genrecal import zoo
from genrecal.export.gguf import GgufExportError, converter
from genrecal.families import get_family


@pytest.fixture(scope="module")
def qwen2_vocab():
    try:
        path = converter.llama_cpp_source() / "models" / "ggml-vocab-qwen2.gguf"
    except GgufExportError as exc:
        pytest.skip(f"the llama-cpp-python sdist is not available: {exc}")
    return zoo.vocab_gguf_tokenizer(get_family("qwen2_vl", role="zoo").tokenizer, path)


def test_image_tokens_take_their_real_ids(qwen2_vocab):
    assert len(qwen2_vocab) == 151936  # no id past the padded vocabulary
    ids = {t: qwen2_vocab.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                               "<|video_pad|>", "<|im_start|>", "<|im_end|>")}
    assert ids == {"<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655,
                   "<|video_pad|>": 151656, "<|im_start|>": 151644, "<|im_end|>": 151645}
    assert qwen2_vocab.convert_ids_to_tokens(151646) == "[PAD151646]"  # ids no family token claims stay
    assert qwen2_vocab.eos_token_id == 151645 and qwen2_vocab.pad_token_id == 151643


def test_chat_prompt_tokenises_as_qwen2_vl(qwen2_vocab):
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is 2024?<|im_end|>"
    assert qwen2_vocab(text).input_ids == [151644, 872, 198, 151652, 151655, 151653, 3838, 374, 220, 17, 15, 17, 19,
                                           30, 151645]
