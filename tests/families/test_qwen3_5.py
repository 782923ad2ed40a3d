"""Qwen3.5 as a genrecal family: the zoo sizes build offline and reload, the hybrid body (Gated DeltaNet +
full attention) and its zero-centred norms, the chat template's answer span and image tokens, the M-RoPE ids,
the Recalibrator built from the student's attention layers, and distillation both ways.

    .venv/bin/python -m pytest tests/families/test_qwen3_5.py -q
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3_5ForConditionalGeneration

from genrecal import zoo
from genrecal.artifacts.onnx_feeds import rope_index
from genrecal.data.render import render
from genrecal.data.samples import Sample
from genrecal.families import get_family, qwen3_5
from genrecal.families.base import image_token_id

from qwen_inputs import check_three_stages
from qwen_inputs import encode as _encode
from qwen_inputs import image as _image


def test_tiny_builds_offline_and_reloads(zoo_dir):
    out = zoo_dir("qwen3_5")
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert type(model) is Qwen3_5ForConditionalGeneration and type(processor).__name__ == "Qwen3VLProcessor"
    text = model.config.text_config
    assert text.layer_types == ["linear_attention", "full_attention"] * 2
    assert text.rope_parameters["mrope_interleaved"] and text.rope_parameters["partial_rotary_factor"] == 0.25
    tok = processor.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    body = model.model.language_model
    # seeded, non-trivial values where transformers puts zeros / ones: the zero-centred norms,
    # dt_bias, the gated norm, q_norm != k_norm (an export that drops one would still match on transformers' init)
    assert body.norm.weight.abs().max() > 0.05 and (body.layers[0].linear_attn.norm.weight - 1).abs().max() > 0.05
    assert not torch.allclose(body.layers[0].linear_attn.dt_bias, torch.ones(4))
    assert not torch.equal(body.layers[3].self_attn.q_norm.weight, body.layers[3].self_attn.k_norm.weight)
    built, _ = zoo.build("qwen3_5", "tiny", seed=0)
    enc = _encode(processor, [_image()])
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, built(**enc).logits)


def test_chat_rendering_answer_span_and_image_tokens(zoo_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(zoo_dir("qwen3_5"))
    family = get_family("qwen3_5")
    path = tmp_path / "a.png"
    _image(48, 64).save(path)
    sample = Sample([path], [{"role": "user", "content": "<image>\nWhat colour is the circle?"},
                             {"role": "assistant", "content": "red"}], "data.json", 0)
    enc = render(processor, sample, image_token_id=image_token_id(processor, family))
    tok = processor.tokenizer
    assert tok.decode(enc.input_ids[enc.answer_start:enc.answer_end]) == "red<|im_end|>"
    assert tok.decode(enc.input_ids[:enc.answer_start]).endswith("<|im_end|>\n<|im_start|>assistant\n")
    n_image = int((enc.input_ids == image_token_id(processor, family)).sum())
    assert n_image == 12 == int(enc.extras["image_grid_thw"].prod()) // 4  # 48x64 px, patch 8, merge 2


def test_runtime_mrope_ids_equal_qwen3_5_get_rope_index():
    model, processor = zoo.build("qwen3_5", "tiny")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"},
                                      {"type": "text", "text": "Which is larger?"}]}],
        add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt], images=[[_image(64, 64), _image(48, 96, 1)]], return_tensors="pt")
    ref, ref_delta = model.model.get_rope_index(enc["input_ids"], mm_token_type_ids=enc["mm_token_type_ids"],
                                                image_grid_thw=enc["image_grid_thw"])
    pos, delta = rope_index(enc["input_ids"].numpy(), enc["image_grid_thw"].numpy(), None,
                            model.config.image_token_id, model.config.vision_config.spatial_merge_size)
    np.testing.assert_array_equal(pos, ref.numpy())
    np.testing.assert_array_equal(delta, ref_delta.numpy())


def test_0_8b_has_qwen3_5_0_8b_shapes():
    """The real-shape size, built on the meta device."""
    tok = zoo.train_tokenizer(get_family("qwen3_5").tokenizer)
    with torch.device("meta"):
        model, processor = qwen3_5.build_tiny("0.8b", tok, 0)
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads,
            text.num_key_value_heads, text.head_dim, text.vocab_size) == (1024, 3584, 24, 8, 2, 256, 248320)
    assert text.layer_types.count("full_attention") == 6 and text.layer_types[-1] == "full_attention"
    assert (text.linear_num_key_heads, text.linear_num_value_heads, text.linear_key_head_dim,
            text.linear_value_head_dim, text.linear_conv_kernel_dim) == (16, 16, 128, 128, 4)
    assert text.rope_parameters["mrope_section"] == [11, 11, 10] and model.config.tie_word_embeddings
    assert (vision.hidden_size, vision.depth, vision.num_heads, vision.patch_size, vision.out_hidden_size) == \
        (768, 12, 12, 16, 1024)
    n_text = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)
    assert 0.7e9 < n_text < 0.8e9, n_text  # Qwen3.5-0.8B's language model with its 248k tied embedding


def test_real_vocabulary_gives_qwen3_5_pretokenizer_ids():
    """The 0.8b size's tokenizer: llama.cpp's ggml-vocab-qwen35.gguf (151,936 entries, the qwen35 pre-tokenizer);
    the vision specials are added after it."""
    from genrecal.export.gguf import GgufExportError
    from genrecal.export.gguf.converter import llama_cpp_source

    try:
        path = llama_cpp_source() / "models" / "ggml-vocab-qwen35.gguf"
    except GgufExportError as exc:
        pytest.skip(f"the llama-cpp-python sdist is not available: {exc}")
    tok = zoo.vocab_gguf_tokenizer(get_family("qwen3_5").tokenizer, path)
    assert tok.convert_tokens_to_ids("<|im_start|>") == 151644 and tok.eos_token_id == 151645
    assert tok.convert_tokens_to_ids("<|image_pad|>") >= 151936
    text = "<|im_start|>user\n<|image_pad|>What is 2024?<|im_end|>"
    ids = tok(text).input_ids
    assert ids[0] == 151644 and ids[-1] == 151645 and tok.decode(ids) == text


# ---- distillation ----
def test_recalibrator_copies_the_students_attention_layers(zoo_dir, tmp_path):
    """A Qwen3.5 student's layers alternate Gated DeltaNet and full attention: the Recalibrator's two blocks are
    full-attention blocks copied from its last two attention layers (1 and 3), and a depth beyond its attention
    layers is refused."""
    from genrecal.distill.models import load_vlm
    from genrecal.distill.recalibrator import Recalibrator
    from genrecal.families.base import attention_layers

    teacher, student = load_vlm(zoo_dir("smolvlm"), "teacher"), load_vlm(zoo_dir("qwen3_5"), "student")
    body = student.model.model.language_model
    assert attention_layers(body) == [body.layers[1], body.layers[3]]
    with pytest.raises(ValueError, match="2 attention layers"):
        Recalibrator.from_models(teacher.model, student.model, "qwen3_5", depth=3)
    recal = Recalibrator.from_models(teacher.model, student.model, "qwen3_5").eval()
    assert recal.meta["layer_class"].endswith(":Qwen3_5DecoderLayer")
    for mine, theirs in zip(recal.layers, (body.layers[1], body.layers[3])):
        assert mine.block_type == "full_attention"
        for name, p in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[name], p)
    d_s = student.model.config.get_text_config().hidden_size
    x, mask = torch.randn(2, 9, d_s), torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        out = recal(x, mask)
        recal.save(tmp_path / "recal")
        torch.testing.assert_close(Recalibrator.load(tmp_path / "recal").eval()(x, mask), out)
    # the final norm starts at the teacher's effective scale (SmolVLM: plain RMSNorm weights)
    torch.testing.assert_close(recal.norm.weight, teacher.model.model.text_model.norm.weight.float())


def test_recalibrator_takes_a_zero_centred_teachers_norm_scale(zoo_dir):
    """Qwen3.5 as teacher: its final norm stores w - 1; the Recalibrator starts at 1 + w (the scale it applies)."""
    from genrecal.distill.models import load_vlm
    from genrecal.distill.recalibrator import Recalibrator

    teacher, student = load_vlm(zoo_dir("qwen3_5"), "teacher"), load_vlm(zoo_dir("smolvlm"), "student")
    recal = Recalibrator.from_models(teacher.model, student.model, "smolvlm")
    stored = teacher.model.model.language_model.norm.weight.float()
    torch.testing.assert_close(recal.norm.weight.data, 1.0 + stored, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("teacher, student", [("llava", "qwen3_5"), ("qwen3_vl", "qwen3_5"), ("qwen3_5", "internvl"),
                                              ("qwen3_5", "smolvlm")])
def test_genrecal_three_stages(zoo_dir, evqa_train, tmp_path, teacher, student):
    check_three_stages(zoo_dir, evqa_train, tmp_path / "run", teacher, student)


# ---- ONNX: the hybrid decoder's states ----
def test_hybrid_decoder_equals_hf_prefill_and_decode():
    """HybridDecoder (explicit conv / recurrent states, the delta rule token by token) = transformers' model
    (chunked prefill, recurrent decode): prefill logits and 6 greedy tokens from the states it hands back."""
    from genrecal.artifacts.onnx_feeds import mrope_decode_ids
    from genrecal.runtimes.prompt import prepare_inputs

    model, processor = zoo.build("qwen3_5", "tiny")
    enc = {k: torch.from_numpy(v) for k, v in prepare_inputs(processor, [_image()], "What shape is it?").items()}
    text = model.config.text_config
    shapes = qwen3_5.state_shapes(model.config)
    assert shapes == {"conv": [2 * 2 * 16 + 4 * 16, 3], "recurrent": [4, 16, 16]}
    with torch.no_grad():
        ref = model(**enc).logits[0]
        greedy = model.generate(**enc, max_new_tokens=6, do_sample=False)[0, -6:].tolist()
        embeds = model.get_input_embeddings()(enc["input_ids"])
        feats = torch.cat(model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"],
                                                        return_dict=True).pooler_output)
        embeds[enc["input_ids"] == model.config.image_token_id] = feats
        pos, delta = rope_index(enc["input_ids"].numpy(), enc["image_grid_thw"].numpy(), None,
                                model.config.image_token_id, 2)
        past = []
        for kind in text.layer_types:
            past += ([torch.zeros(1, *shapes["conv"]), torch.zeros(1, *shapes["recurrent"])]
                     if kind == "linear_attention" else [torch.zeros(1, 2, 0, 64)] * 2)
        decoder = qwen3_5.HybridDecoder(model).eval()
        n = embeds.shape[1]
        out = decoder(embeds, torch.ones(1, n, dtype=torch.long), torch.from_numpy(pos), *past)
        torch.testing.assert_close(out[0][0], ref, rtol=1e-5, atol=1e-5)  # measured 2.7e-7 (max |logit| 0.72)
        tokens = []
        for _ in range(6):
            tokens.append(int(out[0][0, -1].argmax()))
            step = model.get_input_embeddings()(torch.tensor([[tokens[-1]]]))
            ids = torch.from_numpy(mrope_decode_ids(n, delta))
            n += 1
            out = decoder(step, torch.ones(1, n, dtype=torch.long), ids, *out[1:])
    assert tokens == greedy


def test_onnx_fp32_parity_with_states_named_for_transformers_js(zoo_dir, tmp_path):
    """The export's own parity (genrecal's runtime feeding the states back) and the decoder's interface:
    past_conv.i / past_recurrent.i for Gated DeltaNet layers, past_key_values.i.* for attention ones, the delta
    rule as one Loop per linear layer (not unrolled at the traced length). Zeroing the recurrent states between
    steps (a runtime that drops them) fails parity."""
    import onnx

    from genrecal.export.onnx import OnnxBuild
    from genrecal.export.onnx.parity import check_artifact
    from genrecal.runtimes.onnxruntime import OnnxRuntime
    from genrecal.runtimes import ort_kv_cache

    build = OnnxBuild(zoo_dir("qwen3_5"), tmp_path / "work", threads=1)
    manifest = build.build(tmp_path / "onnx-fp32", "fp32", "cpu")
    parity = manifest.parity
    # measured: 4.7e-7 (max |logit| 0.76), greedy 3/3 over 16 tokens
    assert parity["max_abs_diff"] <= 1e-3 and parity["greedy_identical"] == 1.0 and parity["passed"]
    assert manifest.extra["layer_types"] == ["linear_attention", "full_attention"] * 2
    assert manifest.extra["linear_state_shapes"] == {"conv": [128, 3], "recurrent": [4, 16, 16]}
    graph = onnx.load(str(next((tmp_path / "onnx-fp32").rglob("decoder_model_merged.onnx"))), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    assert inputs[3:] == ["past_conv.0", "past_recurrent.0", "past_key_values.1.key", "past_key_values.1.value",
                          "past_conv.2", "past_recurrent.2", "past_key_values.3.key", "past_key_values.3.value"]
    assert [o.name for o in graph.output][1:3] == ["present_conv.0", "present_recurrent.0"]
    assert sum(n.op_type == "Loop" for n in graph.node) == 2

    class Forgetful(ort_kv_cache.ArrayKvCache):
        def step(self, feeds):
            logits = super().step(feeds)
            self.past = [np.zeros_like(p) if name.startswith("past_recurrent") else p
                         for name, p in zip(self.past_names, self.past)]
            return logits

    rt = OnnxRuntime(tmp_path / "onnx-fp32", threads=1)
    rt._kv_cache = lambda max_length: Forgetful(rt.sessions["decoder"], 4, 2, 64, rt.facts.layer_types,
                                                rt.facts.linear_state_shapes)
    dropped = check_artifact(rt, build.reference(), "fp32")
    assert dropped["max_abs_diff"] > 1e-2 and not dropped["passed"]


# ---- GGUF: llama.cpp's converter ----
def test_gguf_refuses_key_and_value_heads_of_different_sizes(tmp_path):
    """llama.cpp runs the delta rule with one head size (measured: such a model converts, then fails to load)."""
    from genrecal.artifacts.gguf_pair.layout import GgufExportError

    text = {"linear_key_head_dim": 16, "linear_value_head_dim": 32}
    (tmp_path / "config.json").write_text(json.dumps({"text_config": text}))
    with pytest.raises(GgufExportError, match="key heads of 16 and value heads of 32"):
        qwen3_5.converter_check(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {**text, "linear_value_head_dim": 16}}))
    qwen3_5.converter_check(tmp_path)


def test_gguf_pair_validation_follows_the_recurrent_layers(llama_cpp_src, zoo_dir, tmp_path):
    """The converter writes `qwen35` (Gated DeltaNet blocks flagged in qwen35.attention.recurrent_layers, no MTP
    block) + `qwen3vl_merger` without DeepStack; validation asks each block for its own kind's tensors, and without
    the flags falls back to llama.cpp's rule (every full_attention_interval-th block is attention). Without
    --no-mtp the converter refuses a transformers student (it wants the multi-token-prediction head)."""
    import gguf

    from genrecal.artifacts.gguf_pair import validate
    from genrecal.export.gguf.converter import convert
    from genrecal.export.gguf.converter_route import fallback_pre
    from genrecal.export.gguf.layout import GgufExportError

    hf = Path(zoo_dir("qwen3_5"))
    text, mmproj = tmp_path / "model.gguf", tmp_path / "mmproj.gguf"
    with pytest.raises(GgufExportError, match="AssertionError"):
        convert(hf, text, "f32", pre=fallback_pre(hf))
    convert(hf, text, "f32", pre=fallback_pre(hf), flags=qwen3_5.GGUF.converter.text_flags)
    convert(hf, mmproj, "f32", mmproj=True)
    facts = validate.validate_pair(text, mmproj)
    assert (facts.text_arch, facts.projector_type) == ("qwen35", "qwen3vl_merger")
    assert facts.n_embd == facts.n_embd_image == 64
    reader = gguf.GGUFReader(str(text))
    value = {f.name: f.contents() for f in reader.fields.values()}
    assert value["qwen35.block_count"] == 4 and value["qwen35.attention.recurrent_layers"] == [True, False] * 2
    assert value["qwen35.rope.dimension_count"] == 16 and value["qwen35.rope.dimension_sections"] == [3, 3, 2, 0]
    assert (value["qwen35.ssm.state_size"], value["qwen35.ssm.group_count"], value["qwen35.ssm.time_step_rank"]) == (
        16, 2, 4)
    kinds = validate.HYBRID_BLOCK["qwen35"]
    assert validate._text_blocks(reader, "qwen35", 4) == [kinds["recurrent"], kinds["attention"]] * 2

    class Unflagged:  # a file without recurrent_layers: llama.cpp's default interval 4
        fields: dict = {}

    assert validate._text_blocks(Unflagged(), "qwen35", 4) == [kinds["recurrent"]] * 3 + [kinds["attention"]]


def test_gguf_f16_through_the_converter_matches_pytorch(llama_cpp_src, zoo_dir, tmp_path):
    """llama.cpp's converter (text `qwen35` + mmproj `qwen3vl_merger`) on tiny: llama.cpp's Gated DeltaNet and
    gated attention give PyTorch's logits, and genrecal's llama.cpp runtime answers as PyTorch does, two questions
    in a row (the second must not see the first's recurrent state). Measured: logits 4.5e-4 (|logit| 0.76), image
    rows 7.8e-4 of their scale, greedy 3/3 over 8 tokens, tokenizer 9/9."""
    from genrecal.artifacts.manifest import load_manifest
    from genrecal.data import load_easy_vqa_questions
    from genrecal.export.gguf import export_gguf
    from genrecal.runtimes.llamacpp import LlamaCppRuntime
    from genrecal.runtimes.prompt import prepare_inputs

    student = zoo_dir("qwen3_5")
    manifest = export_gguf(student, tmp_path / "gguf", "f16", threads=1, samples=3, steps=8, accuracy_limit=4)
    ref = manifest.parity["reference"]
    assert manifest.parity["passed"] and ref["greedy_identical"] == 3 and ref["top1_agreement"] == 1.0
    assert ref["max_abs_logit_diff"] < 2e-3 and ref["image_embed_rel_diff"] < 5e-3
    assert ref["prompt_ids_equal"] and ref["tokenizer_agreement"] == "9/9"
    extra = load_manifest(tmp_path / "gguf").extra
    assert (extra["text_arch"], extra["projector_type"]) == ("qwen35", "qwen3vl_merger")
    model = AutoModelForImageTextToText.from_pretrained(student).eval()
    processor = AutoProcessor.from_pretrained(student)
    with LlamaCppRuntime(tmp_path / "gguf", threads=1) as rt:
        for question, _, image in load_easy_vqa_questions("test", limit=2, seed=1):
            enc = {k: torch.from_numpy(v) for k, v in prepare_inputs(processor, [image], question).items()}
            with torch.no_grad():
                expected = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc["input_ids"].shape[1]:]
            assert rt.generate([image], question, max_new_tokens=8).token_ids == [
                t for t in expected.tolist() if t != processor.tokenizer.eos_token_id]


def test_gguf_q4_k_m_on_the_gguf_size_is_k_quants(llama_cpp_src, zoo_dir, tmp_path):
    """The "gguf" size's rows are multiples of 256, so every quantised text weight is Q4_K / Q6_K (the Gated
    DeltaNet conv kernels stay F32: llama.cpp never quantises them, and the manifest does not call that a
    fallback)."""
    from genrecal.export.gguf import export_gguf

    manifest = export_gguf(zoo_dir("qwen3_5", "gguf"), tmp_path / "gguf", "q4_k_m", check=False, threads=1)
    quant = manifest.extra["quantization"]
    assert quant["fallbacks"] == [] and "warning" not in quant
    assert quant["tensor_types"]["Q4_K"] > 0 and set(quant["tensor_types"]) == {"Q4_K", "Q6_K", "F32"}


def test_saved_tokenizer_reloads_with_the_same_pipeline_and_ids(zoo_dir):
    """transformers loads a qwen3_5 tokenizer as Qwen3_5Tokenizer, which imposes Qwen3.5's NFC normaliser and
    Split regex: the zoo builds its tokenizer with them, so built and reloaded tokenize alike (before, a text
    with digits and marks split differently), and llama.cpp's converter gets its `qwen35` pre-tokenizer."""
    import json as _json

    from genrecal.export.gguf.converter_route import fallback_pre

    _, processor = zoo.build("qwen3_5", "tiny")
    reloaded = AutoProcessor.from_pretrained(zoo_dir("qwen3_5"))
    assert type(reloaded.tokenizer).__name__ == "Qwen3_5Tokenizer"
    text = "Cafe\u0301 has 2024 circles, isn't it?\n\nYes"
    assert processor.tokenizer(text).input_ids == reloaded.tokenizer(text).input_ids
    built, saved = (_json.loads(t.backend_tokenizer.to_str()) for t in (processor.tokenizer, reloaded.tokenizer))
    assert built["pre_tokenizer"] == saved["pre_tokenizer"] and built["normalizer"] == saved["normalizer"]
    assert fallback_pre(Path(zoo_dir("qwen3_5"))) == "qwen35"
