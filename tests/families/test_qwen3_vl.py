"""Qwen3-VL as a genrecal family: the zoo sizes build offline and reload, the chat template's answer span and
image tokens, the interleaved M-RoPE ids, and DeepStack strong enough on `tiny-deepstack` that a runtime
dropping it cannot pass parity.

    .venv/bin/python -m pytest tests/families/test_qwen3_vl.py -q
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen3VLForConditionalGeneration

from genrecal import zoo
from genrecal.artifacts.onnx_feeds import rope_index
from genrecal.data.render import render
from genrecal.data.samples import Sample
from genrecal.families import get_family, qwen3_vl
from genrecal.families.base import image_token_id

from qwen_inputs import check_three_stages
from qwen_inputs import encode as _encode
from qwen_inputs import image as _image


def test_tiny_builds_offline_and_reloads(zoo_dir):
    out = zoo_dir("qwen3_vl")
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert type(model) is Qwen3VLForConditionalGeneration and type(processor).__name__ == "Qwen3VLProcessor"
    cfg = model.config
    assert cfg.vision_config.deepstack_visual_indexes == [0, 1]
    rope = cfg.text_config.rope_parameters
    assert rope["mrope_interleaved"] and rope["mrope_section"] == [6, 5, 5]
    tok = processor.tokenizer
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    # the zoo gives biases and norm weights seeded values (transformers' zeros / ones would hide a dropped bias)
    layer = model.model.language_model.layers[0].self_attn
    assert not torch.equal(layer.q_norm.weight, layer.k_norm.weight)
    assert model.model.visual.blocks[0].attn.qkv.bias.abs().max() > 0
    # reloaded == built (same seed)
    built, _ = zoo.build("qwen3_vl", "tiny", seed=0)
    enc = _encode(processor, [_image()])
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, built(**enc).logits)


def test_chat_rendering_answer_span_and_image_tokens(zoo_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(zoo_dir("qwen3_vl"))
    family = get_family("qwen3_vl")
    path = tmp_path / "a.png"
    _image(48, 64).save(path)
    sample = Sample([path], [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "<image>\nWhat colour is the circle?"},
                             {"role": "assistant", "content": "red"}], "data.json", 0)
    enc = render(processor, sample, image_token_id=image_token_id(processor, family))
    tok = processor.tokenizer
    assert tok.decode(enc.input_ids[enc.answer_start:enc.answer_end]) == "red<|im_end|>"
    prompt = tok.decode(enc.input_ids[:enc.answer_start])
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>")
    assert prompt.endswith("<|vision_end|>What colour is the circle?<|im_end|>\n<|im_start|>assistant\n")
    # 48x64 px, patch 8, merge 2: (6 * 8) patches / 4 = 12 image tokens; mm_token_type_ids marks them
    n_image = int((enc.input_ids == image_token_id(processor, family)).sum())
    assert n_image == 12 == int(enc.extras["image_grid_thw"].prod()) // 4
    assert int(enc.extras["mm_token_type_ids"].sum()) == 12


# 200x120 px is resized to 80x48 (<= 64 * 64 pixels, sides multiples of 16): 10 * 6 patches / 4
@pytest.mark.parametrize("hw, tokens", [((64, 64), 16), ((48, 64), 12), ((200, 120), 15)])
def test_image_token_count(hw, tokens):
    _, processor = zoo.build("qwen3_vl", "tiny")
    enc = _encode(processor, [_image(*hw)])
    ids = enc["input_ids"][0]
    assert int((ids == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == tokens
    assert int(enc["image_grid_thw"].prod()) // 4 == tokens


def test_rotary_takes_the_recalibrators_ids_as_1d_rope():
    """The Recalibrator's fresh 1-D ids on all three interleaved axes are plain RoPE over the whole head."""
    model, _ = zoo.build("qwen3_vl", "tiny")
    rotary = model.model.language_model.rotary_emb
    ids = torch.arange(7).expand(2, 7)
    x = torch.zeros(2, 7, 64)
    cos, sin = rotary(x, get_family("qwen3_vl").rope_position_ids(ids))
    inv = rotary.inv_freq  # [head_dim / 2]
    angles = ids[..., None].float() * inv
    torch.testing.assert_close(cos, torch.cat([angles.cos(), angles.cos()], -1))
    torch.testing.assert_close(sin, torch.cat([angles.sin(), angles.sin()], -1))
    # image ids are really interleaved: the height axis drives frequency 1, the width axis frequency 2
    pos = torch.zeros(3, 1, 1, dtype=torch.long)
    pos[1], pos[2] = 5, 9
    cos = rotary(x[:1, :1], pos)[0][0, 0]
    torch.testing.assert_close(cos[:3], torch.stack([torch.tensor(1.0), (5 * inv[1]).cos(), (9 * inv[2]).cos()]))


def test_runtime_mrope_ids_equal_qwen3_vl_get_rope_index():
    """The runtimes' torch-free M-RoPE ids (Qwen2-VL's rule) are Qwen3-VL's for image prompts."""
    model, processor = zoo.build("qwen3_vl", "tiny")
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


def _greedy_and_logits(model, enc, steps: int = 16):
    return model(**enc).logits[0], model.generate(**enc, max_new_tokens=steps, do_sample=False)[0, -steps:].tolist()


def test_deepstack_strong_enough_to_matter_on_tiny_deepstack():
    """Dropping DeepStack must move tiny-deepstack's logits far beyond the fp32 export bar (1e-3) and change the
    16-token greedy continuation of every parity sample, so an export that drops it fails parity. Measured on
    the three parity samples (seed 0): prefill logits move by 0.88 (max |logit| 0.70-0.77), the last position's
    by 0.37-0.46, greedy diverges at tokens 0, 3, 0 (`tiny`, unscaled: 0.49-0.52, diverging at 0, 3, 1)."""
    from genrecal.data import load_easy_vqa_questions
    from genrecal.export.onnx.parity import PARITY_SAMPLES
    from genrecal.runtimes.prompt import prepare_inputs

    model, processor = zoo.build("qwen3_vl", "tiny-deepstack")
    body = model.model.language_model
    firsts = []
    with torch.no_grad():
        for question, _, image in load_easy_vqa_questions("test", limit=PARITY_SAMPLES):
            enc = {k: torch.from_numpy(v) for k, v in prepare_inputs(processor, [image], question).items()}
            logits, tokens = _greedy_and_logits(model, enc)
            body._deepstack_process = lambda hidden, mask, embeds: hidden  # the image rows get nothing added
            try:
                bare_logits, bare_tokens = _greedy_and_logits(model, enc)
            finally:
                del body._deepstack_process
            assert (logits - bare_logits).abs().max() > 0.5 and (logits[-1] - bare_logits[-1]).abs().max() > 0.1
            assert tokens != bare_tokens
            firsts.append(next(i for i, (a, b) in enumerate(zip(tokens, bare_tokens)) if a != b))
    assert min(firsts) == 0


def test_2b_has_qwen3_vl_2b_shapes():
    """The real-shape size, built on the meta device: Qwen3-VL-2B-Instruct's config.json values."""
    tok = zoo.train_tokenizer(get_family("qwen3_vl").tokenizer)
    with torch.device("meta"):
        model, processor = qwen3_vl.build_tiny("2b", tok, 0)
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.num_attention_heads,
            text.num_key_value_heads, text.head_dim) == (2048, 6144, 28, 16, 8, 128)
    assert text.rope_parameters["mrope_section"] == [24, 20, 20] and text.rope_parameters["rope_theta"] == 5e6
    assert (vision.hidden_size, vision.intermediate_size, vision.depth, vision.num_heads, vision.patch_size,
            vision.num_position_embeddings, vision.out_hidden_size) == (1024, 4096, 24, 16, 16, 2304, 2048)
    assert vision.deepstack_visual_indexes == [5, 11, 17] and model.config.tie_word_embeddings
    assert processor.image_processor.size == {"shortest_edge": 65536, "longest_edge": 16777216}
    assert list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]
    # the text body (tied embeddings counted once) per layer: q, k, v, o, QK-norm, SwiGLU, two RMSNorms
    per_layer = 2048 * (16 + 8 + 8 + 16) * 128 + 2 * 128 + 3 * 2048 * 6144 + 2 * 2048
    n_text = sum(p.numel() for n, p in model.named_parameters() if "visual" not in n)
    assert n_text == len(tok) * 2048 + 28 * per_layer + 2048


# ---- distillation: qwen3_vl as student and as teacher, all three stages ----
def test_recalibrator_is_built_from_qwen3_layers_with_qk_norm(zoo_dir, tmp_path):
    from genrecal.distill.models import load_vlm
    from genrecal.distill.recalibrator import Recalibrator

    teacher, student = load_vlm(zoo_dir("smolvlm"), "teacher"), load_vlm(zoo_dir("qwen3_vl"), "student")
    recal = Recalibrator.from_models(teacher.model, student.model, "qwen3_vl").eval()
    assert recal.meta["layer_class"].endswith(":Qwen3VLTextDecoderLayer")
    last = student.model.model.language_model.layers[-2:]
    for mine, theirs in zip(recal.layers, last):  # init "student": the last layers, QK-norm included
        torch.testing.assert_close(mine.self_attn.q_norm.weight, theirs.self_attn.q_norm.weight)
        torch.testing.assert_close(mine.self_attn.k_norm.weight, theirs.self_attn.k_norm.weight)
    d_s = student.model.config.get_text_config().hidden_size
    x, mask = torch.randn(2, 9, d_s), torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        # the Recalibrator's fresh positions through its first (student) layer = the student's own layer on 0..L-1
        ids = torch.arange(9).expand(2, 9)
        pos = recal.rotary(x, get_family("qwen3_vl").rope_position_ids(ids))
        causal = torch.full((9, 9), torch.finfo(x.dtype).min).triu(1)[None, None].expand(2, 1, 9, 9)
        ref = last[0](x, attention_mask=causal, position_ids=ids, position_embeddings=pos)
        body = student.model.model.language_model
        own_pos = body.rotary_emb(x, ids[None].expand(3, 2, 9))
        own = last[0](x, attention_mask=causal, position_ids=ids, position_embeddings=own_pos)
        torch.testing.assert_close(ref, own)
        out = recal(x, mask)
        recal.save(tmp_path / "recal")
        torch.testing.assert_close(Recalibrator.load(tmp_path / "recal").eval()(x, mask), out)


@pytest.mark.parametrize("teacher, student", [("smolvlm", "qwen3_vl"), ("internvl", "qwen3_vl"),
                                              ("qwen3_vl", "qwen2_vl"), ("qwen3_vl", "llava")])
def test_genrecal_three_stages(zoo_dir, evqa_train, tmp_path, teacher, student):
    # measured: ar 6.03 -> 5.52, sft 6.20 -> 5.55 (qwen3_vl student); ar 6.14 -> 5.81, sft 6.32 -> 5.68 (teacher)
    check_three_stages(zoo_dir, evqa_train, tmp_path / "run", teacher, student)


# ---- ONNX: DeepStack kept ----
def test_vision_wrapper_gives_the_features_and_deepstack_of_hf():
    """Qwen3Vision (tensor arithmetic, traced) = HF's tower: the merger's rows, then each DeepStack level's, for
    images of three sizes in one call (the learned 6x6 grid resampled to 8x8, 6x8 and 4x12 patch grids)."""
    model, processor = zoo.build("qwen3_vl", "tiny-deepstack")
    images = [_image(64, 64), _image(48, 64, 1), _image(32, 96, 2)]
    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>" * 3], images=[images], return_tensors="pt")
    with torch.no_grad():
        out = qwen3_vl.Qwen3Vision(model).eval()(enc["pixel_values"], enc["image_grid_thw"])
        ref = model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"], return_dict=True)
    expected = torch.cat([torch.cat(ref.pooler_output), *(torch.cat(level) for level in ref.deepstack_features)], -1)
    assert out.shape == (40, 64 * 3)  # (64 + 48 + 48) patches / 4, D * (1 + 2 levels)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # measured 1.9e-6 at max |x| 6.2


def test_onnx_fp32_keeps_deepstack_and_dropping_it_fails_parity(zoo_dir, tmp_path):
    from genrecal.artifacts.manifest import load_manifest
    from genrecal.export.onnx import OnnxBuild
    from genrecal.export.onnx.parity import check_artifact
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    # genrecal's own decoder (--onnx-decoder auto ships the builder's: tests/export/test_onnx_builder_mrope.py)
    build = OnnxBuild(zoo_dir("qwen3_vl", "tiny-deepstack"), tmp_path / "work", threads=1, decoder="torchscript")
    manifest = build.build(tmp_path / "onnx-fp32", "fp32", "cpu")
    parity = manifest.parity
    # measured: 3.9e-7 (max |logit| 0.77), greedy 3/3; with the DeepStack columns zeroed: 0.88, greedy 0/3
    assert parity["max_abs_diff"] <= 1e-3 and parity["greedy_identical"] == 1.0 and parity["passed"]
    assert manifest.extra["deepstack_layers"] == 2 and manifest.extra["genai"].startswith("not written")
    assert load_manifest(tmp_path / "onnx-fp32").extra["decoder_from"].startswith("genrecal")

    rt = OnnxRuntime(tmp_path / "onnx-fp32", threads=1)
    embed = rt.embed(np.array([[1, 2, 3]]), None)
    assert embed.shape == (1, 3, 64 * 3) and not embed[..., 64:].any()  # text rows carry zero DeepStack slices
    encode = rt.encode_images

    def without_deepstack(enc):
        feats = encode(enc)
        if feats is not None:
            feats = feats.copy()
            feats[:, 64:] = 0.0  # what a runtime that drops DeepStack feeds
        return feats

    rt.encode_images = without_deepstack
    dropped = check_artifact(rt, build.reference(), "fp32")
    assert dropped["max_abs_diff"] > 0.1 and dropped["greedy_identical"] < 1.0 and not dropped["passed"]


# ---- GGUF: llama.cpp's converter ----
def test_gguf_refuses_deepstack_on_the_last_text_layer(tmp_path):
    import json

    from genrecal.artifacts.gguf_pair.layout import GgufExportError

    config = {"text_config": {"num_hidden_layers": 2}, "vision_config": {"deepstack_visual_indexes": [0, 1]}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GgufExportError, match="2 DeepStack levels into 2 text layers"):
        qwen3_vl.converter_check(tmp_path)
    config["text_config"]["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    qwen3_vl.converter_check(tmp_path)


def test_gguf_pair_validation_checks_deepstack(zoo_dir, tmp_path):
    """The converter's pair validates (QK-norm, DeepStack mergers, level counts agree); an mmproj that lost a
    DeepStack level is refused before llama.cpp reads it."""
    import gguf

    from genrecal.artifacts.gguf_pair.layout import GgufValidationError
    from genrecal.artifacts.gguf_pair.validate import validate_pair
    from genrecal.export.gguf.converter import convert, llama_cpp_source
    from genrecal.export.gguf.converter_route import fallback_pre
    from genrecal.export.gguf.layout import GgufExportError

    try:
        llama_cpp_source()
    except GgufExportError as exc:
        pytest.skip(f"llama.cpp's converter is not available: {exc}")
    hf = Path(zoo_dir("qwen3_vl", "tiny-deepstack"))
    text, mmproj = tmp_path / "model.gguf", tmp_path / "mmproj.gguf"
    convert(hf, text, "f32", pre=fallback_pre(hf))
    convert(hf, mmproj, "f32", mmproj=True)
    facts = validate_pair(text, mmproj)
    assert (facts.text_arch, facts.projector_type) == ("qwen3vl", "qwen3vl_merger")
    assert (facts.n_embd, facts.n_embd_image) == (64, 64 * 3)
    # the same mmproj with block 1 no longer flagged as a DeepStack block
    reader = gguf.GGUFReader(str(mmproj))
    bad = tmp_path / "bad.gguf"
    writer = gguf.GGUFWriter(str(bad), "clip")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        if field.name == "clip.vision.is_deepstack_layers":
            value = [True, False, False]
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        shape = list(reversed([int(x) for x in tensor.shape]))
        writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_shape=shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GgufValidationError, match="adds 2 DeepStack slices but .* writes 1"):
        validate_pair(text, bad)


def test_gguf_f16_through_the_converter_keeps_deepstack(zoo_dir, tmp_path):
    """llama.cpp's converter (text `qwen3vl` + mmproj `qwen3vl_merger`) on tiny-deepstack: the mmproj's rows carry
    the DeepStack features (compared with PyTorch's), and genrecal's llama.cpp runtime answers as PyTorch does.
    Measured: logits 4.0e-4 (|logit| 0.66), image rows 6.3e-4 of their scale, greedy 3/3, tokenizer 9/9."""
    from genrecal.artifacts.manifest import load_manifest
    from genrecal.data import load_easy_vqa_questions
    from genrecal.export.gguf import GgufExportError, export_gguf
    from genrecal.export.gguf.converter import llama_cpp_source
    from genrecal.runtimes.llamacpp import LlamaCppRuntime
    from genrecal.runtimes.prompt import prepare_inputs

    try:
        llama_cpp_source()
    except GgufExportError as exc:
        pytest.skip(f"llama.cpp's converter is not available: {exc}")
    student = zoo_dir("qwen3_vl", "tiny-deepstack")
    manifest = export_gguf(student, tmp_path / "gguf", "f16", threads=1, samples=3, steps=8, accuracy_limit=4)
    ref = manifest.parity["reference"]
    assert manifest.parity["passed"] and ref["greedy_identical"] == 3 and ref["top1_agreement"] == 1.0
    assert ref["image_embed_rel_diff"] < 5e-3 and ref["prompt_ids_equal"] and ref["tokenizer_agreement"] == "9/9"
    extra = load_manifest(tmp_path / "gguf").extra
    assert (extra["text_arch"], extra["projector_type"]) == ("qwen3vl", "qwen3vl_merger")
    question, _, image = load_easy_vqa_questions("test", limit=1, seed=1)[0]
    model = AutoModelForImageTextToText.from_pretrained(student).eval()
    processor = AutoProcessor.from_pretrained(student)
    enc = {k: torch.from_numpy(v) for k, v in prepare_inputs(processor, [image], question).items()}
    with torch.no_grad():
        expected = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc["input_ids"].shape[1]:].tolist()
    with LlamaCppRuntime(tmp_path / "gguf", threads=1) as rt:
        assert rt.generate([image], question, max_new_tokens=8).token_ids == [
            t for t in expected if t != processor.tokenizer.eos_token_id]


def test_real_vocabulary_gives_qwen_ids():
    """The 2b size's tokenizer: llama.cpp's ggml-vocab-qwen2.gguf (Qwen3-VL's 151,936-entry vocabulary) with the
    vision tokens at Qwen3-VL's real ids."""
    from genrecal.export.gguf import GgufExportError
    from genrecal.export.gguf.converter import llama_cpp_source

    try:
        path = llama_cpp_source() / "models" / "ggml-vocab-qwen2.gguf"
    except GgufExportError as exc:
        pytest.skip(f"the llama-cpp-python sdist is not available: {exc}")
    tok = zoo.vocab_gguf_tokenizer(get_family("qwen3_vl").tokenizer, path)
    assert len(tok) == 151936
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is 2024?<|im_end|>"
    assert tok(text).input_ids == [151644, 872, 198, 151652, 151655, 151653, 3838, 374, 220, 17, 15, 17, 19, 30,
                                   151645]
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643
