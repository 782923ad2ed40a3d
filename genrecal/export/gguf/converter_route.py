"""The pair written by llama.cpp's own tools, for families whose GgufRoute has `converter=`.

    text:   convert_hf_to_gguf.py on the transformers dir (or the family's staged copy) -> model.gguf
    mmproj: convert_hf_to_gguf.py --mmproj on the same dir                            -> mmproj.gguf
            or, `mmproj="llava_legacy"`: tools/mtmd/legacy-models/llava_surgery_v2.py -C and
            convert_image_encoder_to_gguf.py --clip-model-is-vision (llama.cpp's route for LLaVA-1.5:
            its HF converter refuses CLIP towers); llava_legacy_run.py runs the encoder script under
            transformers 5. Image mean/std come from the HF processor; 2-D weights are written F16.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from genrecal.export.gguf import converter
from genrecal.export.gguf.layout import GgufExportError
from genrecal.export.gguf.tokenizer import pre_tokenizer_name
from genrecal.families.gguf_parts import ConverterRoute

MMPROJ_PRECISION = "f16"
LEGACY = Path("tools") / "mtmd" / "legacy-models"
SURGERY, ENCODER = LEGACY / "llava_surgery_v2.py", LEGACY / "convert_image_encoder_to_gguf.py"


def fallback_pre(hf_dir: Path) -> str | None:
    """llama.cpp's pre-tokenizer name for tokenizer.json, for the converter to use when it does not
    know the tokenizer's hash (locally trained tokenizers); None without a tokenizer.json."""
    path = Path(hf_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    return pre_tokenizer_name(json.loads(path.read_text()).get("pre_tokenizer"))


def _pre(route: ConverterRoute, hf_dir: Path) -> str | None:
    if route.pre_tokenizer == "none":
        return None
    if route.pre_tokenizer == "optional":
        try:
            return fallback_pre(hf_dir)
        except GgufExportError:  # no BPE pre-tokenizer (e.g. a SentencePiece vocabulary): none needed
            return None
    return fallback_pre(hf_dir)


@contextmanager
def _source(route: ConverterRoute, hf_dir: Path) -> Iterator[Path]:
    """The dir the converter reads: the family's staged copy (in a scratch dir) or hf_dir itself."""
    if route.check is not None:
        route.check(Path(hf_dir))
    if route.stage is None:
        yield Path(hf_dir)
        return
    with tempfile.TemporaryDirectory(prefix="genrecal-stage-") as tmp:
        yield route.stage(Path(hf_dir), Path(tmp) / "staged")


def write_text(route: ConverterRoute, path: Path, hf_dir: Path, precision: str) -> dict:
    """model.gguf at f32/f16/q8_0 by the converter; the tokenizer facts the manifest records."""
    with _source(route, hf_dir) as src:
        converter.convert(src, path, precision, pre=_pre(route, hf_dir), flags=route.text_flags)
    return text_facts(path)


def write_mmproj(route: ConverterRoute, path: Path, hf_dir: Path) -> dict:
    """mmproj.gguf at F16 (position embeddings the converter keeps F32 itself)."""
    if route.mmproj == "llava_legacy":
        _llava_legacy_mmproj(route, path, Path(hf_dir))
    else:
        with _source(route, hf_dir) as src:
            converter.convert(src, path, MMPROJ_PRECISION, mmproj=True)
    return mmproj_facts(path)


def _llava_legacy_mmproj(route: ConverterRoute, path: Path, hf_dir: Path) -> None:
    src = converter.llama_cpp_source()
    processor = hf_dir / "processor_config.json"
    image = json.loads(processor.read_text()).get("image_processor", {}) if processor.is_file() else {}
    mean, std = image.get("image_mean"), image.get("image_std")
    if not (mean and std):
        raise GgufExportError(f"{hf_dir}: no image_mean/image_std in processor_config.json")
    gguf_py = str(src / "gguf-py")
    with tempfile.TemporaryDirectory(prefix="genrecal-llava-") as tmp:
        checkpoint, vision = route.mmproj_stage(hf_dir, Path(tmp))
        converter.run_script([str(src / SURGERY), "-C", "-m", str(checkpoint)], "llama.cpp's llava_surgery_v2.py",
                             hf_dir, pythonpath=gguf_py)
        os.replace(checkpoint / "llava.clip", vision / "pytorch_model.bin")
        out = Path(tmp) / "out"
        runner = str(Path(__file__).with_name("llava_legacy_run.py"))  # transformers 5's CLIPVisionModel
        converter.run_script([runner, str(src / ENCODER), "--", "-m", str(vision), "--llava-projector",
                              str(checkpoint / "llava.projector"), "--output-dir", str(out), "--clip-model-is-vision",
                              "--image-mean", *map(str, mean), "--image-std", *map(str, std)],
                             "llama.cpp's convert_image_encoder_to_gguf.py", hf_dir, pythonpath=gguf_py)
        shutil.move(str(out / "mmproj-model-f16.gguf"), path)


def text_facts(path: Path) -> dict:
    """What the manifest records about a converter-written text GGUF (export.py's text record)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    return {"tokenizer_pre": value("tokenizer.ggml.pre"), "n_vocab": len(value("tokenizer.ggml.tokens")),
            "add_bos": bool(value("tokenizer.ggml.add_bos_token", False)), "fallbacks": [],
            "converter": {"llama_cpp_python": converter.llama_cpp_version()}}


def mmproj_facts(path: Path) -> dict:
    from genrecal.export.gguf.quantize import tensor_report

    return {"tensor_types": tensor_report(path, MMPROJ_PRECISION)["tensor_types"], "fallbacks": []}
