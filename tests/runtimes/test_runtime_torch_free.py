"""The device side without torch: `genrecal.runtimes` imports, and the onnxruntime and llama.cpp runtimes
run an artifact, in a child process where `import torch` fails; the torch-free processor gives the same
input ids as transformers' own (which needs torch for its video half).

    python -m pytest tests/runtimes/test_runtime_torch_free.py -q
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

NO_TORCH = """
import sys
for name in ("torch", "torchvision"):
    sys.modules[name] = None  # import torch raises ImportError, find_spec("torch") is None
"""

RUN = NO_TORCH + """
import json
import numpy as np
from PIL import Image
from genrecal import runtimes
image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))
out = {}
for path in sys.argv[1:]:
    rt = runtimes.load(path, threads=1)
    out[path] = {"runtime": rt.name, "ids": rt.generate([image], "What shape is in the image?", max_new_tokens=4).token_ids}
out["torch_loaded"] = [m for m in sys.modules if m.split(".")[0] == "torch" and sys.modules[m] is not None]
print(json.dumps(out))
"""


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def test_the_child_really_has_no_torch():
    res = _child(NO_TORCH + "import torch\n")
    assert res.returncode != 0 and "import of torch halted" in res.stderr


def test_onnx_and_llama_cpp_runtimes_run_without_torch(exported, image):
    onnx_dir, gguf_dir = exported("onnx", "fp32"), exported("gguf", "f32")
    res = _child(RUN, str(onnx_dir), str(gguf_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] == []
    assert out[str(onnx_dir)]["runtime"] == "onnxruntime" and out[str(gguf_dir)]["runtime"] == "llamacpp"
    # the same greedy tokens as the same runtimes in this process (torch importable here)
    from genrecal import runtimes

    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))
    for path in (onnx_dir, gguf_dir):
        here = runtimes.load(path, threads=1).generate([image], "What shape is in the image?", max_new_tokens=4)
        assert out[str(path)]["ids"] == here.token_ids


@pytest.mark.parametrize("family", ["smolvlm", "qwen2_vl", "internvl", "llava", "idefics3", "qwen2_5_vl"])
def test_torch_free_processor_gives_transformers_ids(family, zoo_dir):
    """Built from the tokenizer and the PIL image processor only: the same input ids as AutoProcessor."""
    from genrecal.runtimes.prompt import prepare_inputs

    path = zoo_dir(family)
    code = NO_TORCH + f"""
import json, numpy as np
from PIL import Image
from genrecal.runtimes.prompt import load_processor, prepare_inputs
image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 80, 3), dtype=np.uint8))
enc = prepare_inputs(load_processor({path!r}), [image], "Which colour? <b>{{{{x}}}}</b>")
print(json.dumps({{"ids": enc["input_ids"].tolist(), "keys": sorted(enc),
                  "pixels": [float(np.asarray(v, np.float64).sum()) for k, v in sorted(enc.items()) if k.startswith("pixel")]}}))
"""
    res = _child(code)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    from transformers import AutoProcessor

    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 80, 3), dtype=np.uint8))
    ref = prepare_inputs(AutoProcessor.from_pretrained(path), [image], "Which colour? <b>{{x}}</b>")
    assert out["ids"] == ref["input_ids"].tolist()
    assert set(out["keys"]) <= set(ref) and {k for k in ref if k.startswith("pixel")} <= set(out["keys"])
    ref_pixels = [float(np.asarray(v, np.float64).sum()) for k, v in sorted(ref.items()) if k.startswith("pixel")]
    assert np.allclose(out["pixels"], ref_pixels, rtol=1e-3, atol=1.0)
