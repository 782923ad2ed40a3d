"""The parts HF cannot export as they are: Qwen's vision tower rewritten from tensor arithmetic,
M-RoPE ids outside the graph, onnxruntime-genai's config and embedding graph.

    python -m pytest tests/export/test_onnx_pieces.py -q
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from genrecal.artifacts import layout
from genrecal.artifacts.onnx_feeds import mrope_decode_ids, rope_index
from genrecal.families import onnx_spec
from genrecal.families.qwen2_vl import QwenVision

QWEN = ("qwen2_vl", "qwen2_5_vl")
SIZES = [((64, 64),), ((48, 32), (64, 64), (32, 32)), ((128, 64),), ((16, 16),)]


def _images(*sizes):
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _messages(n_images: int, text: str):
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def qwen(zoo_dir):
    def get(family):
        path = zoo_dir(family)
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager").eval()
        return model, AutoProcessor.from_pretrained(path)

    return get


@pytest.mark.parametrize("family", QWEN)
@pytest.mark.parametrize("sizes", SIZES, ids=["1img", "3img-mixed", "tall", "min"])
def test_rewritten_vision_and_rope_equal_hf(family, sizes, qwen):
    model, processor = qwen(family)
    text = processor.apply_chat_template(_messages(len(sizes), "what shape?"), add_generation_prompt=True,
                                         tokenize=False)
    enc = processor(text=[text], images=[_images(*sizes)], return_tensors="pt")
    with torch.no_grad():
        ref = torch.cat(list(model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"],
                                                            return_dict=True).pooler_output))
        ours = QwenVision(model).eval()(enc["pixel_values"], enc["image_grid_thw"])
    assert ours.shape == ref.shape and float((ours - ref).abs().max()) < 1e-5
    pos, delta = _rope_index(enc, model.config)
    ref_pos, ref_delta = model.model.get_rope_index(enc["input_ids"], mm_token_type_ids=enc["mm_token_type_ids"],
                                                    image_grid_thw=enc["image_grid_thw"],
                                                    attention_mask=enc["attention_mask"])
    assert np.array_equal(pos, ref_pos.numpy()) and np.array_equal(delta, ref_delta.numpy())


def _rope_index(enc, config):
    """The runtime's numpy M-RoPE ids for a processor output (torch tensors)."""
    return rope_index(enc["input_ids"].numpy(), enc["image_grid_thw"].numpy(), enc["attention_mask"].numpy(),
                      config.image_token_id, config.vision_config.spatial_merge_size)


@pytest.mark.parametrize("family", QWEN)
def test_rope_index_left_padded_batch_and_decode_ids(family, qwen):
    model, processor = qwen(family)
    processor.tokenizer.padding_side = "left"
    texts = [processor.apply_chat_template(_messages(n, t), add_generation_prompt=True, tokenize=False)
             for n, t in ((1, "what shape is in the image here?"), (2, "hi"))]
    ims = _images((64, 64), (32, 48), (64, 32))
    enc = processor(text=texts, images=[ims[:1], ims[1:]], return_tensors="pt", padding=True)
    assert (enc["attention_mask"] == 0).any()  # really padded
    pos, delta = _rope_index(enc, model.config)
    ref_pos, ref_delta = model.model.get_rope_index(enc["input_ids"], mm_token_type_ids=enc["mm_token_type_ids"],
                                                    image_grid_thw=enc["image_grid_thw"],
                                                    attention_mask=enc["attention_mask"])
    assert np.array_equal(pos, ref_pos.numpy()) and np.array_equal(delta, ref_delta.numpy())
    # decode: every axis at past_len + delta, as HF generate feeds [3, B, 1]
    step = mrope_decode_ids(10, delta, batch=2)
    assert step.shape == (3, 2, 1) and (step[:, :, 0] == 10 + delta.reshape(1, 2)).all()
    # a text-only prompt degenerates to 1-D positions with delta 0
    ids = enc["input_ids"][:1, -5:]
    pos, delta = rope_index(ids.numpy(), None, None, model.config.image_token_id,
                            model.config.vision_config.spatial_merge_size)
    assert np.array_equal(pos, np.broadcast_to(np.arange(5), (3, 1, 5))) and int(delta[0, 0]) == 0


def test_qwen_vision_graph_serves_any_image_count_and_size(onnx_artifact, qwen):
    """TorchScript would bake the traced grid in; our graph must follow image_grid_thw."""
    out, _ = onnx_artifact("qwen2_vl", "fp32")
    model, processor = qwen("qwen2_vl")
    sess = ort.InferenceSession(str(out / layout.client_graph(layout.VISION_GRAPH, "fp32")),
                                providers=["CPUExecutionProvider"])
    for sizes in SIZES:
        text = processor.apply_chat_template(_messages(len(sizes), "x"), add_generation_prompt=True, tokenize=False)
        enc = processor(text=[text], images=[_images(*sizes)], return_tensors="pt")
        with torch.no_grad():
            ref = torch.cat(list(model.model.get_image_features(enc["pixel_values"], enc["image_grid_thw"],
                                                                return_dict=True).pooler_output)).numpy()
        got = sess.run(None, {"pixel_values": enc["pixel_values"].numpy(),
                              "image_grid_thw": enc["image_grid_thw"].numpy()})[0]
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


def test_genai_config_only_where_genai_knows_the_family(onnx_artifact):
    out, manifest = onnx_artifact("qwen2_5_vl", "int8")
    cfg = json.loads((out / layout.GENAI_CONFIG).read_text())["model"]
    assert cfg["type"] == "qwen2_5_vl" and manifest.extra["genai"] == layout.GENAI_CONFIG
    graphs = manifest.extra["graphs"]
    assert cfg["decoder"]["filename"] == graphs["decoder"] == layout.client_graph(layout.DECODER_GRAPH, "int8")
    assert cfg["vision"]["filename"] == graphs["vision"]
    assert cfg["decoder"]["num_hidden_layers"] == manifest.extra["num_layers"]
    assert cfg["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert cfg["image_token_id"] == manifest.extra["image_token_id"]
    for name in (cfg["decoder"]["filename"], cfg["embedding"]["filename"], cfg["vision"]["filename"]):
        assert name in manifest.files
    qwen2_dir, _ = onnx_artifact("qwen2_vl", "int8")  # genai's qwen2_5_vl pipeline runs it (ClientFacts.genai_type)
    assert json.loads((qwen2_dir / layout.GENAI_CONFIG).read_text())["model"]["type"] == "qwen2_5_vl"
    other_dir, other = onnx_artifact("llava", "int8")
    assert not (other_dir / layout.GENAI_CONFIG).exists()
    assert other.extra["genai"].startswith("not written") and "qwen2_5_vl" in other.extra["genai"]


def test_genai_embedding_scatters_features_like_the_runtime(onnx_artifact, easy_vqa_sample):
    from genrecal.export.onnx.genai import GENAI_EMBED_GRAPH
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    out, _ = onnx_artifact("qwen2_5_vl", "fp32")
    rt = OnnxRuntime(out, threads=1)
    question, _, image = easy_vqa_sample
    enc = rt.prepare([image], question)
    feats = rt.encode_images(enc)
    sess = ort.InferenceSession(str(out / layout.client_graph(GENAI_EMBED_GRAPH, "fp32")),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": enc["input_ids"], "image_features": feats})[0]
    assert np.abs(got - rt.embed(enc["input_ids"], feats)).max() == 0.0
    text_only = rt.prepare([], question)["input_ids"]
    empty = np.zeros((0, feats.shape[1]), np.float32)
    assert np.abs(sess.run(None, {"input_ids": text_only, "image_features": empty})[0]
                  - rt.embed(text_only, None)).max() == 0.0


def test_fp16_is_standard_ops_and_int4_uses_matmulnbits(onnx_artifact):
    fp16_dir, _ = onnx_artifact("llava", "fp16")
    int4_dir, _ = onnx_artifact("llava", "int4")
    for graph in layout.GRAPHS.values():
        path = fp16_dir / layout.client_graph(graph, "fp16")
        assert {n.domain for n in onnx.load(str(path)).graph.node} <= {"", "ai.onnx"}
    ops = {n.op_type for g in layout.GRAPHS.values()
           for n in onnx.load(str(int4_dir / layout.client_graph(g, "int4"))).graph.node}
    assert "MatMulNBits" in ops


def test_unknown_family_has_no_onnx_spec():
    from genrecal.families.base import UnsupportedFamilyError

    with pytest.raises(UnsupportedFamilyError, match="families with an ONNX wrapper: .*llava"):
        onnx_spec("gemma3")


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_decoder_graph_honours_a_left_padded_mask_and_a_cache(family, onnx_artifact, zoo_dir):
    """The traced mask logic is not baked to all-ones: a padded batch and a non-empty cache match
    the PyTorch wrapper the graph was traced from (genrecal's own decoder: the builder's GroupQueryAttention
    graph, which `auto` ships for qwen2_vl, takes one row when a prompt meets a cache)."""
    from genrecal.export.onnx.wrappers import Decoder

    out, manifest = onnx_artifact(family, "fp32", "torchscript")
    f = manifest.extra
    model = AutoModelForImageTextToText.from_pretrained(zoo_dir(family), attn_implementation="eager").eval()
    sess = ort.InferenceSession(str(out / manifest.extra["graphs"]["decoder"]), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    batch, seq, past = 2, 5, 3
    embeds = torch.randn(batch, seq, f["hidden_size"], generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    mask[0, :2] = 0  # row 0 is left-padded
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    if f["mrope"]:
        pos = pos.unsqueeze(0).expand(3, batch, seq).contiguous()
    cache = [torch.randn(batch, f["num_kv_heads"], past, f["head_dim"], generator=g)
             for _ in range(2 * f["num_layers"])]
    with torch.no_grad():
        ref = Decoder(model).eval()(embeds, mask, pos, *cache)
    feeds = dict(zip(layout.decoder_inputs(f["num_layers"]), (t.numpy() for t in (embeds, mask, pos, *cache))))
    got = sess.run(None, feeds)
    assert np.abs(got[0] - ref[0].numpy()).max() < 1e-4
    assert all(np.abs(a - b.numpy()).max() < 1e-5 for a, b in zip(got[1:], ref[1:]))
    assert got[1].shape[2] == past + seq


def test_large_graph_path_writes_one_sidecar_every_precision_reads(onnx_artifact, tmp_path, monkeypatch):
    """Graphs over protobuf's 2 GB go to <graph>.onnx.data; exercised by lowering the threshold."""
    from genrecal.export.onnx import files
    from genrecal.export.onnx.quantize import convert_graphs

    src_dir, manifest = onnx_artifact("llava", "fp32")
    monkeypatch.setattr(files, "PROTO_LIMIT", 1000)
    big = tmp_path / "big"
    big.mkdir()
    for name in layout.GRAPHS.values():
        files.save_graph(onnx.load(str(src_dir / layout.client_graph(name, "fp32"))), big / name)
        assert files.sidecar(big / name).is_file() and files.is_large(big / name)
    ids = np.array([[1, 2, 3]], np.int64)
    want = ort.InferenceSession(str(big / layout.EMBED_GRAPH)).run(None, {"input_ids": ids})[0]
    for precision in ("fp32", "int8", "int4", "fp16"):
        out = tmp_path / precision
        convert_graphs(big, out, precision)
        assert files.sidecar(out / layout.EMBED_GRAPH).is_file() or precision != "fp32"
        for name in layout.GRAPHS.values():
            sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        got = ort.InferenceSession(str(out / layout.EMBED_GRAPH)).run(None, {"input_ids": ids})[0]
        assert np.abs(got - want).max() < 0.05, precision
        del sess
