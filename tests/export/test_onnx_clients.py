"""Other people's runtimes load genrecal's ONNX exports as written and greedy-decode like PyTorch.

    python -m pytest tests/export/test_onnx_clients.py -q -m "not slow"   # 9 tests, ~30 s on 2 cores
    python -m pytest tests/export/test_onnx_clients.py -q -m slow         # the rest, ~1 min

transformers.js 4 on node (the js/ folder: `npm ci --ignore-scripts --prefix js`) and
onnxruntime-genai 0.18 each skip with the reason when absent; otherwise they really load the tiny
zoo model's artifact dir from local files (remote models off) and generate. fp32 must give
PyTorch's prompt and greedy tokens; every precision must give the tokens genrecal's own
onnxruntime backend gives on the same dir (same graphs, so a client that feeds them differently
shows up even where quantisation moves the tokens away from PyTorch's).
"""
from __future__ import annotations

import json
import shutil

import pytest

from genrecal.benchmarks import clients
from genrecal.artifacts import layout

QUESTION = "Does the image contain a brown shape?"
STEPS = 8
JS_FAMILIES = ("smolvlm", "idefics3", "qwen2_5_vl", "llava")
# transformers.js 4.3 refuses these two, in its words (README: why, and what it would take)
JS_REFUSALS = {"internvl": "Unknown image_processor_type: 'GotOcr2ImageProcessor'.",
               "qwen2_vl": 'An error occurred during model execution: "Missing the following inputs: image_grid_thw.'}
GENAI_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
PRECISIONS = ("fp32", "fp16", "int8", "int8w", "int4")  # int8w: what the cpu and phone targets ship
FAST = {("smolvlm", "fp32"), ("smolvlm", "int8w"), ("qwen2_5_vl", "fp32")}

needs_js = pytest.mark.skipif(clients.transformers_js_missing() is not None,
                              reason=f"transformers.js: {clients.transformers_js_missing()}")
needs_genai = pytest.mark.skipif(clients.genai_missing() is not None, reason=str(clients.genai_missing()))


def _cases(families, fast):
    return [pytest.param(f, p, marks=() if (f, p) in fast else pytest.mark.slow) for f in families for p in PRECISIONS]


@pytest.fixture(scope="module")
def reference(zoo_dir, easy_vqa_sample):
    """reference(family, image=True) -> PyTorch's {"prompt", "tokens"}, computed once."""
    done = {}

    def get(family, with_image=True):
        if (family, with_image) not in done:
            image = easy_vqa_sample[2] if with_image else None
            done[family, with_image] = clients.torch_greedy(zoo_dir(family), image, QUESTION, STEPS)
        return done[family, with_image]

    return get


def _own_runtime(out, image):
    from genrecal.runtimes.onnxruntime import OnnxRuntime

    return OnnxRuntime(out, threads=1).generate([image] if image else [], QUESTION, STEPS).token_ids


def _check(got, out, precision, image, ref):
    assert "error" not in got, got["error"]
    assert got["prompt"] is None or got["prompt"] == ref["prompt"]
    if precision == "fp32":
        assert got["tokens"] == ref["tokens"]
    assert got["tokens"] == _own_runtime(out, image)


@needs_js
@pytest.mark.parametrize("family,precision", _cases(JS_FAMILIES, FAST))
def test_transformers_js_loads_the_export_as_written(family, precision, onnx_artifact, reference, easy_vqa_sample):
    out, _ = onnx_artifact(family, precision)
    image = easy_vqa_sample[2]
    got = clients.transformers_js(out, image, QUESTION, STEPS)  # dtype from the dir's own config.json
    assert got.get("dtype") == layout.TRANSFORMERS_JS_DTYPE[precision], got
    _check(got, out, precision, image, reference(family))


@needs_js
@pytest.mark.slow
def test_transformers_js_splits_large_images_like_transformers(zoo_dir, tmp_path):
    """Image splitting on (the zoo's tiny-split size, as real SmolVLM checkpoints ship): transformers.js
    tiles the image itself (its own Idefics3 image processor) into [1, tiles, 3, H, W]; the prompt
    and the greedy tokens equal PyTorch's."""
    import numpy as np
    from PIL import Image

    from genrecal.export.onnx import OnnxBuild

    src = zoo_dir("smolvlm", "tiny-split")
    OnnxBuild(src, tmp_path / "work", check=False, threads=1).build(tmp_path / "onnx-fp32", "fp32", "cpu")
    rng = np.random.RandomState(0)
    for w, h in ((512, 768), (800, 600)):  # several tiles + the global view each
        image = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rng.randint(0, 256, (12, 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR).save(image)
        got = clients.transformers_js(tmp_path / "onnx-fp32", image, QUESTION, STEPS)
        ref = clients.torch_greedy(src, image, QUESTION, STEPS)
        assert got.get("prompt") == ref["prompt"] and got["tokens"] == ref["tokens"], (w, h, got)


@needs_js
@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(JS_REFUSALS))
def test_transformers_js_refusals_are_the_known_ones(family, onnx_artifact, easy_vqa_sample):
    out, _ = onnx_artifact(family, "fp32")
    got = clients.transformers_js(out, easy_vqa_sample[2], QUESTION, STEPS)
    assert got.get("error") == JS_REFUSALS[family], got


@needs_genai
@pytest.mark.parametrize("family,precision", _cases(GENAI_FAMILIES, FAST))
def test_genai_loads_the_export_through_genai_config(family, precision, onnx_artifact, reference, easy_vqa_sample):
    out, _ = onnx_artifact(family, precision)
    image = easy_vqa_sample[2]
    _check(clients.genai_generate(out, image, QUESTION, STEPS), out, precision, image, reference(family))
    if precision == "fp32":  # a text-only prompt goes through genai's embedding graph with no features
        _check(clients.genai_generate(out, None, QUESTION, STEPS), out, precision, None, reference(family, False))


@needs_genai
def test_genai_resizes_other_image_shapes_like_transformers(onnx_artifact, zoo_dir, tmp_path):
    """genai resizes with its own processor config: a wide and an odd-sized image get HF's image
    tokens and PyTorch's greedy tokens."""
    import numpy as np
    from PIL import Image

    out, _ = onnx_artifact("qwen2_5_vl", "fp32")
    rng = np.random.RandomState(1)
    for h, w in ((48, 96), (37, 71)):
        image = tmp_path / f"{h}x{w}.png"
        Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(image)
        got = clients.genai_generate(out, image, QUESTION, STEPS)
        assert got == clients.torch_greedy(zoo_dir("qwen2_5_vl"), image, QUESTION, STEPS), (h, w)


@needs_genai
@pytest.mark.parametrize("family", ["llava", "idefics3", "smolvlm", "internvl"])
def test_genai_refuses_the_other_families_in_its_own_words(family, onnx_artifact, tmp_path):
    """No genai_config.json is written for them; declared as their own model type, genai 0.18 says why."""
    out, manifest = onnx_artifact(family, "fp32")
    assert not (out / layout.GENAI_CONFIG).exists() and manifest.extra["genai"].startswith("not written")
    probe = shutil.copytree(onnx_artifact("qwen2_5_vl", "fp32")[0], tmp_path / "probe")
    config = json.loads((probe / layout.GENAI_CONFIG).read_text())
    config["model"]["type"] = family
    (probe / layout.GENAI_CONFIG).write_text(json.dumps(config))
    got = clients.genai_generate(probe, None, QUESTION, 1)
    assert got.get("error") == f"Unsupported model_type in config.json: {family}", got
