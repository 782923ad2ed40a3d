"""One user turn -> model inputs, the same way for every runtime, parity check and client driver.

    processor = load_processor("out/onnx-fp32")
    enc = prepare_inputs(processor, [image], "What shape is in the image?")   # numpy arrays

`load_processor` returns transformers' processor for the dir. Where torch is not installed (a device
running the ONNX or llama.cpp runtime), transformers cannot build the processors whose video half needs
torch (SmolVLM, Qwen2-VL, InternVL); the processor is then built from its torch-free halves, the
tokenizer and the PIL image processor, which give the same input_ids (tested in
tests/runtimes/test_runtime_torch_free.py). The chat template is rendered by the tokenizer with the
processor's template, so no processor method that touches the video half runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genrecal.runtimes.base import RuntimeError_
from genrecal.runtimes.images import open_images

_TORCH_FREE_PARTS = ("image_processor", "tokenizer")


def _torch_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except ValueError:  # sys.modules["torch"] is None
        return False


def load_processor(path: str | Path):
    """The dir's transformers processor (trust_remote_code off); torch-free where torch is missing."""
    from transformers import AutoProcessor

    if _torch_available():
        return AutoProcessor.from_pretrained(str(path), trust_remote_code=False)
    return _torch_free_processor(Path(path))


def _torch_free_processor(path: Path):
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    config_path = path / "processor_config.json"
    if not config_path.is_file():
        raise RuntimeError_(f"{path} has no processor_config.json: cannot build its processor without torch")
    config = json.loads(config_path.read_text())
    cls = getattr(transformers, config.get("processor_class", ""), None)
    if cls is None:
        raise RuntimeError_(f"{path}: unknown processor_class {config.get('processor_class')!r}")
    keep = [a for a in cls.get_attributes() if a in _TORCH_FREE_PARTS]
    # the same class with only its torch-free parts: transformers checks and sets the attributes it lists
    torch_free = type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda c: list(keep))})
    template = path / "chat_template.jinja"
    options = {k: v for k, v in config.items()
               if k not in ("processor_class", "image_processor", "video_processor", "audio_processor")}
    parts = {"image_processor": AutoImageProcessor.from_pretrained(str(path)),
             "tokenizer": AutoTokenizer.from_pretrained(str(path))}
    missing = {a: None for a in cls.get_attributes() if a not in keep}
    return torch_free(**parts, **missing, chat_template=template.read_text() if template.is_file() else None,
                      **options)


def tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def user_turn(processor, n_images: int, prompt: str) -> str:
    """The chat text of one user turn (images first, then the question) with the generation prompt."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
    tokenizer = tokenizer_of(processor)
    template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=template,
                                         add_generation_prompt=True, tokenize=False)


def prepare_inputs(processor, images: list, prompt: str) -> dict[str, np.ndarray]:
    """One user turn through the chat template and the processor -> numpy arrays (input_ids [1, L], the
    family's pixel tensors, ...). Parity checks feed the same arrays to PyTorch."""
    images = open_images(images)
    kwargs = {"images": [images]} if images else {}
    return dict(processor(text=[user_turn(processor, len(images), prompt)], return_tensors="np", **kwargs))
