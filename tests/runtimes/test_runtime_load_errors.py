"""runtimes.load and bad input: missing/tampered artifacts, wrong runtime, missing libraries, bad images.

Every failure must be a GenrecalError (the CLI prints it as one line), naming the path and the fix.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from genrecal import runtimes
from genrecal.errors import GenrecalError
from genrecal.artifacts.manifest import MANIFEST_NAME, Manifest, ManifestError, write_manifest
from genrecal.runtimes import tensorrt as trt_runtime
from genrecal.runtimes.base import RuntimeError_
from genrecal.runtimes.images import ImageRejected, open_images
from genrecal.runtimes.torch_runtime import TorchRuntime


@pytest.fixture(scope="module")
def rt(student):
    before = torch.get_num_threads()
    yield TorchRuntime(student, threads=1)
    torch.set_num_threads(before)


def test_hf_export_dir_loads_with_torch(hf_artifact):
    manifest, runtime = runtimes.describe(hf_artifact)
    assert manifest.format == "hf" and runtime == "torch"


def test_missing_artifact(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        runtimes.load(tmp_path / "nope")


def test_dir_that_is_no_artifact(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(runtimes.UnknownArtifactError, match="neither an HF model dir"):
        runtimes.load(tmp_path)


def test_export_root_names_its_artifacts(hf_artifact, tmp_path):
    root = tmp_path / "export"
    shutil.copytree(hf_artifact, root / "hf")
    with pytest.raises(runtimes.UnknownArtifactError, match=r"export root; pick one artifact: .*hf"):
        runtimes.load(root)


def test_tampered_artifact_is_refused(hf_artifact, tmp_path):
    bad = tmp_path / "hf"
    shutil.copytree(hf_artifact, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(-16, 2)
        f.write(b"\0" * 16)
    with pytest.raises(ManifestError, match="checksum mismatch for model.safetensors"):
        runtimes.load(bad)


def test_unknown_format_and_wrong_runtime(hf_artifact, tmp_path):
    with pytest.raises(RuntimeError_, match="hf artifact; it runs with torch, not llamacpp"):
        runtimes.load(hf_artifact, runtime="llamacpp")
    odd = tmp_path / "odd"
    odd.mkdir()
    write_manifest(odd, Manifest(format="coreml", target="phone", family="smolvlm", precision="fp16",
                                 source_sha256="0"))
    with pytest.raises(runtimes.UnknownArtifactError, match="format 'coreml' has no runtime"):
        runtimes.load(odd)


def test_missing_backend_library_is_one_clear_line(monkeypatch, hf_artifact):
    monkeypatch.setitem(runtimes.BACKENDS, "torch", ("genrecal.runtimes._no_such_backend", "X", "genrecal[x]"))
    with pytest.raises(RuntimeError_, match=r"torch runtime is not available here .*install genrecal\[x\]"):
        runtimes.load(hf_artifact)


def _fake_engine_dir(tmp_path, extra: dict | None = None):
    root = tmp_path / "tensorrt-fp16"
    root.mkdir()
    for name in trt_runtime.ENGINES.values():
        (root / name).write_bytes(b"not a real engine")
    write_manifest(root, Manifest(format="tensorrt", target="jetson", family="smolvlm", precision="fp16",
                                  source_sha256="0", extra=extra or {"tensorrt_version": "10.3.0", "gpu": "Orin"}))
    return root


def test_tensorrt_without_the_library_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on any machine without JetPack
    root = _fake_engine_dir(tmp_path)
    assert runtimes.describe(root)[1] == "tensorrt"
    with pytest.raises(RuntimeError_, match="TensorRT is not installed here.*JetPack"):
        runtimes.load(root)


def test_tensorrt_refuses_engines_from_another_version_or_gpu():
    extra = {"tensorrt_version": "10.3.0", "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}
    trt_runtime.check_compatible(extra, "10.3.0.30", "Orin (nvgpu)", "8.7")
    with pytest.raises(RuntimeError_, match="built with TensorRT 10.3.0, this is TensorRT 10.16.0"):
        trt_runtime.check_compatible(extra, "10.16.0", "Orin (nvgpu)")
    with pytest.raises(RuntimeError_, match="built for Orin \\(nvgpu\\), this GPU is NVIDIA H100"):
        trt_runtime.check_compatible(extra, "10.3.0", "NVIDIA H100")
    with pytest.raises(RuntimeError_, match="compute capability 8.7"):
        trt_runtime.check_compatible(extra, "10.3.0", "Orin (nvgpu)", "9.0")
    with pytest.raises(RuntimeError_, match="does not say which TensorRT"):
        trt_runtime.check_compatible({}, "10.3.0", "Orin (nvgpu)")


@pytest.mark.parametrize("bad, message", [
    (Image.new("RGB", (1, 1)), "1x1 pixels is too small"),
    ("not-an-image", "not a readable image"),
    ("missing.png", "file not found"),
])
def test_images_the_processor_cannot_take_are_refused(rt, tmp_path, bad, message):
    if bad == "not-an-image":
        bad = tmp_path / "notes.png"
        bad.write_text("this is text, not a PNG")
    elif bad == "missing.png":
        bad = tmp_path / "missing.png"
    with pytest.raises(ImageRejected, match=message):
        rt.generate([bad], "What shape?", max_new_tokens=2)


def test_images_are_normalised_to_rgb(tmp_path):
    Image.new("RGBA", (16, 16)).save(tmp_path / "a.png")
    images = open_images([tmp_path / "a.png", Image.new("L", (16, 16))])
    assert [im.mode for im in images] == ["RGB", "RGB"]


def test_empty_prompt_is_refused(rt, image):
    with pytest.raises(GenrecalError, match="prompt is empty"):
        rt.generate([image], "  ")


def test_manifest_names_what_to_do_when_absent(tmp_path, student):
    d = tmp_path / "m"
    shutil.copytree(student, d)
    (d / MANIFEST_NAME).write_text(json.dumps({"format": "hf"}))  # unreadable: fields missing
    with pytest.raises(ManifestError, match="unreadable"):
        runtimes.load(d)
