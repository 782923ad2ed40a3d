"""TorchRuntime --device / --dtype: a bf16 checkpoint on the CPU (fp32 by default, bf16 when asked),
the same greedy tokens as transformers' own generate in that dtype, refusals as one line, and the CUDA
paths (`gpu` marker: skipped where torch sees no GPU).

    python -m pytest tests/runtimes/test_runtime_torch_device.py -q
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from genrecal import runtimes
from genrecal.runtimes.base import RuntimeError_
from genrecal.runtimes.torch_device import checkpoint_dtype, resolve_placement
from genrecal.runtimes.torch_runtime import TorchRuntime

QUESTION = "What shape is in the image?"
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def bf16_student(bf16_zoo_dir) -> str:
    return bf16_zoo_dir("smolvlm")


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def reference_ids(path: str, image, dtype: torch.dtype, device: str = "cpu") -> list[int]:
    """transformers' own greedy ids for QUESTION, the model loaded in `dtype` on `device`."""
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
    processor = AutoProcessor.from_pretrained(path)
    content = [{"type": "image"}, {"type": "text", "text": QUESTION}]
    prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                           tokenize=False)
    inputs = processor(text=[prompt], images=[[image]], return_tensors="pt").to(device, dtype=dtype)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    eos = processor.tokenizer.eos_token_id
    return [t for t in out.tolist() if t != eos]


def test_the_bf16_checkpoint_is_bf16_on_disk(bf16_student):
    from safetensors import safe_open

    assert checkpoint_dtype(bf16_student) == "bfloat16"
    with safe_open(f"{bf16_student}/model.safetensors", framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"BF16"}


@pytest.mark.skipif(CUDA, reason="auto picks CUDA on this machine; see the gpu tests")
def test_auto_on_the_cpu_computes_a_bf16_checkpoint_in_fp32(bf16_student, image):
    rt = TorchRuntime(bf16_student, threads=1)
    assert (rt.placement.device, rt.placement.dtype) == ("cpu", "float32") and rt.model.dtype == torch.float32
    gen = rt.generate([image], QUESTION, max_new_tokens=6)
    assert gen.token_ids == reference_ids(bf16_student, image, torch.float32)
    extra = gen.timing.extra
    assert (extra["device"], extra["dtype"]) == ("cpu", "float32") and "bfloat16" in extra["dtype_reason"]
    assert "gpu_peak_mb" not in extra


def test_an_explicit_dtype_is_obeyed_on_the_cpu(bf16_student, image):
    rt = TorchRuntime(bf16_student, threads=1, device="cpu", dtype="bf16")
    assert rt.model.dtype == torch.bfloat16 and rt.placement.reason == "asked for (--dtype)"
    gen = rt.generate([image], QUESTION, max_new_tokens=6)
    assert gen.token_ids == reference_ids(bf16_student, image, torch.bfloat16)
    assert gen.timing.extra["dtype"] == "bfloat16" and gen.timing.decode_tok_s > 0
    # a torch.dtype works too (the old keyword), and fp32 from a bf16 file is an exact upcast
    assert TorchRuntime(bf16_student, threads=1, device="cpu", dtype=torch.float32).model.dtype == torch.float32


def test_placement_rules():
    where = "cuda" if CUDA else "cpu"
    assert resolve_placement("cpu", "auto", "bfloat16").dtype == "float32"
    assert resolve_placement("cpu", "fp16", "bfloat16").dtype == "float16"
    auto = resolve_placement("auto", "auto", "bfloat16")
    assert (auto.device, auto.dtype) == (where, "bfloat16" if CUDA else "float32")
    with pytest.raises(RuntimeError_, match="unknown dtype 'int3'; choose one of auto, fp32"):
        resolve_placement("cpu", "int3")
    with pytest.raises(RuntimeError_, match="unknown device 'tpu'"):
        resolve_placement("tpu", "auto")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(bf16_student):
    with pytest.raises(RuntimeError_, match="--device cuda: torch .* sees no CUDA device; use --device cpu or auto"):
        TorchRuntime(bf16_student, device="cuda")


def test_device_and_dtype_are_refused_for_an_export(exported):
    onnx_dir = exported("onnx", "fp32")
    with pytest.raises(RuntimeError_, match="--dtype apply to the torch runtime .* runs with onnxruntime"):
        runtimes.load(onnx_dir, dtype="bf16")
    assert runtimes.load(onnx_dir, threads=1).name == "onnxruntime"  # without them it loads as before


def test_the_demo_passes_them_to_torch_run_models_only(bf16_student, exported):
    from genrecal.demo.models import open_model

    teacher = open_model("teacher", bf16_student, threads=1, device="cpu", dtype="bf16")
    assert teacher.runtime.model.dtype == torch.bfloat16
    student = open_model("student", exported("onnx", "fp32"), threads=1, device="cpu", dtype="bf16")
    assert student.runtime.name == "onnxruntime"


# ---- CUDA (gpu marker: skipped without a GPU) ----
@pytest.mark.gpu
def test_auto_on_cuda_keeps_the_checkpoint_dtype(bf16_student, image):
    rt = TorchRuntime(bf16_student)
    assert (rt.placement.device, rt.model.dtype) == ("cuda", torch.bfloat16)
    assert rt.model.device.type == "cuda"
    gen = rt.generate([image], QUESTION, max_new_tokens=6)
    assert gen.token_ids == reference_ids(bf16_student, image, torch.bfloat16, "cuda")
    t = gen.timing
    assert t.extra["device"] == "cuda" and t.extra["gpu_peak_mb"] > 0
    assert t.vision_encode_ms > 0 and t.prefill_ms > 0 and t.decode_tok_s > 0


@pytest.mark.gpu
def test_cuda_fp32_on_request_and_streaming(bf16_student, image):
    rt = TorchRuntime(bf16_student, device="cuda", dtype="fp32")
    assert rt.model.dtype == torch.float32
    plain = rt.generate([image], QUESTION, max_new_tokens=6)
    stream = rt.generate([image], QUESTION, max_new_tokens=6, stream=True)
    assert "".join(stream).strip() == plain.text and stream.result.token_ids == plain.token_ids
    assert plain.token_ids == reference_ids(bf16_student, image, torch.float32, "cuda")
