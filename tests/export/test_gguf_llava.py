"""LLaVA to GGUF through llama.cpp's own tools (convert_hf_to_gguf.py for the text model, the legacy
llava_surgery_v2.py + convert_image_encoder_to_gguf.py for the CLIP mmproj), from the installed
llama-cpp-python's sdist, checked against PyTorch in llama-cpp-python.

    .venv/bin/python -m pytest tests/export/test_gguf_llava.py -q -s   # ~2.5 min here, 1 min with -m 'not slow'

The student is the zoo llava on a real tokenizer (llama.cpp's ggml-vocab-gpt-2.gguf: the converter
recognises its pre-tokenizer hash; HF and llama.cpp tokenise alike) with LLaVA-1.5's
vision_feature_layer -2. libmtmd's LLaVA graph in llama-cpp-python 0.3.36 lays the CLS token out
differently from HF (ggml-org/llama.cpp#25814, see genrecal/families/llava.py): the conversion is
held exactly to PyTorch computing that graph, and the distance to the HF model is measured and printed.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from genrecal.export.gguf import GgufExportError, export_gguf


def _with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config, indent=1))
    return dst


@pytest.fixture(scope="module")
def llava_1_5(llama_cpp_src, zoo_dir, tmp_path_factory):
    """Zoo llava on ggml-vocab-gpt-2 with vision_feature_layer -2 (LLaVA-1.5's: the last block's output skipped)."""
    student = zoo_dir("llava", vocab_gguf=llama_cpp_src / "models" / "ggml-vocab-gpt-2.gguf")
    return _with_config(student, tmp_path_factory.mktemp("llava") / "llava-1.5", vision_feature_layer=-2)


def test_mmproj_keeps_the_feature_layer_and_drops_post_layernorm(llava_1_5, tmp_path):
    from gguf import GGUFReader

    from genrecal.export.gguf import converter_route
    from genrecal.families import llava

    converter_route.write_mmproj(llava.GGUF.converter, tmp_path / "mmproj.gguf", llava_1_5)
    reader = GGUFReader(str(tmp_path / "mmproj.gguf"))
    field = {k: f.contents() for k, f in reader.fields.items()}
    names = {t.name for t in reader.tensors}
    n_blocks = json.loads((llava_1_5 / "config.json").read_text())["vision_config"]["num_hidden_layers"]
    # hidden_states[n_blocks - 1] (feature layer -2): blocks 0 .. n-2 stored and run, no post-layernorm
    assert field["clip.vision.feature_layer"] == [n_blocks - 1] and field["clip.vision.block_count"] == n_blocks - 1
    assert f"v.blk.{n_blocks - 2}.attn_q.weight" in names and f"v.blk.{n_blocks - 1}.attn_q.weight" not in names
    assert not [n for n in names if n.startswith("v.post_ln")]
    assert field["clip.projector_type"] == "mlp" and {"mm.0.weight", "mm.2.weight", "v.pre_ln.weight"} <= names
    image = json.loads((llava_1_5 / "processor_config.json").read_text())["image_processor"]
    assert np.allclose(field["clip.vision.image_mean"], image["image_mean"])
    assert np.allclose(field["clip.vision.image_std"], image["image_std"])


def test_runtime_graph_model_is_a_different_model(llava_1_5):
    """runtime_model changes what the vision tower computes (else parity against it would prove nothing)."""
    import torch

    from genrecal.export.gguf.export import load_source
    from genrecal.families.llava import runtime_model

    model, _ = load_source(llava_1_5)
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        hf = model.model.get_image_features(pixel_values=pixels).pooler_output
        ours = runtime_model(model).model.get_image_features(pixel_values=pixels).pooler_output
    hf, ours = torch.cat(list(hf)) if isinstance(hf, (list, tuple)) else hf, \
        torch.cat(list(ours)) if isinstance(ours, (list, tuple)) else ours
    assert hf.shape == ours.shape and float((hf - ours).abs().max()) > 1e-2


def test_select_strategy_full_is_refused_in_one_line(llava_1_5, tmp_path):
    from genrecal.export.gguf import converter_route
    from genrecal.families import llava

    student = _with_config(llava_1_5, tmp_path / "full", vision_feature_select_strategy="full")
    with pytest.raises(GgufExportError, match="implements only 'default'") as err:
        converter_route.write_mmproj(llava.GGUF.converter, tmp_path / "mmproj.gguf", student)
    assert "\n" not in str(err.value)


def test_crop_rule_matches_the_clip_processor(llava_1_5):
    """The runtime's replay of CLIPImageProcessor (shortest edge, centre crop) on a non-square image."""
    from PIL import Image
    from transformers import AutoProcessor

    from genrecal.families.llava import gguf_prompt_format as prompt_format

    processor = AutoProcessor.from_pretrained(llava_1_5)
    ip = processor.image_processor
    yy, xx = np.mgrid[0:96, 0:160]  # smooth content: the two bicubic kernels differ only on sharp edges
    image = Image.fromarray(np.stack([xx * 255 // 159, yy * 255 // 95, (xx + yy) % 128], -1).astype(np.uint8))
    fitted = prompt_format(ip).fit_image(image)
    assert fitted.size == (32, 32)
    hf = ip(images=[image], return_tensors="np")["pixel_values"][0]  # [3, 32, 32] normalised
    mean, std = np.array(ip.image_mean)[:, None, None], np.array(ip.image_std)[:, None, None]
    ours = (np.asarray(fitted, dtype=np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
    assert np.abs((ours - hf) * std * 255).max() <= 8  # grey levels: PIL vs torchvision bicubic, same crop


@pytest.mark.slow  # ~1.5 min here: two PyTorch references (HF and runtime graph) on a 50k-token vocabulary
def test_llava_export_through_llama_cpp_tools_matches_pytorch(llava_1_5, tmp_path):
    from genrecal.artifacts.manifest import load_manifest
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    manifest = export_gguf(llava_1_5, tmp_path / "gguf", "f16", samples=2, steps=8, accuracy_limit=2)
    ref, hf = manifest.parity["reference"], manifest.parity["reference_original"]
    print(f"\nllava f16 vs the runtime graph: logits {ref['max_abs_logit_diff']:.3g}, image embeddings "
          f"{ref['image_embed_rel_diff']:.3g} relative, greedy {ref['greedy_identical']}/2; vs the HF model: "
          f"image embeddings {hf['image_embed_rel_diff']:.3g} relative, top-1 {hf['top1_agreement']:.2f}, "
          f"greedy {hf['greedy_identical']}/2")
    assert ref["greedy_identical"] == 2 and ref["top1_agreement"] == 1.0 and ref["prompt_ids_equal"]
    assert ref["max_abs_logit_diff"] <= manifest.parity["thresholds"]["max_abs_logit_diff"]
    assert ref["image_embed_rel_diff"] <= 5e-3 and ref["tokenizer_agreement"] == "7/7"
    assert hf["image_embed_rel_diff"] > 10 * ref["image_embed_rel_diff"]  # the libmtmd graph, measured
    extra = load_manifest(tmp_path / "gguf").extra
    assert (extra["text_arch"], extra["projector_type"]) == ("llama", "mlp")
    assert extra["tokenizer"]["tokenizer_pre"] == "gpt-2"  # recognised by hash
    assert LlamaCppRuntime(tmp_path / "gguf") is not None
