"""One user turn -> model inputs, the same way for every runtime, parity check and client driver.

    processor = load_processor("out/onnx-fp32")
    enc = prepare_inputs(processor, [image], "What shape is in the image?")   # numpy arrays

`load_processor` returns transformers' processor for the dir. Where torch is not installed (a device
running the ONNX or llama.cpp runtime), transformers cannot build the processors whose video half needs
torch (SmolVLM, Qwen2-VL, InternVL); the processor is then built from its torch-free halves, the
tokenizer and the PIL image processor, which give the same input_ids (tested in
tests/runtimes/test_runtime_torch_free.py). The chat template is rendered by the tokenizer with the
processor's template, so no processor method that touches the video half runs.

User text is text (`genrecal.user_text`): control tokens typed in the question (`<|im_end|>`, `<image>`,
...) are encoded as plain text, never as turn markers or image placeholders, and llama.cpp's media marker
is ordinary text; `prompt_segments` gives the llama.cpp runtime the same rendering, cut where its images go,
and it encodes the pieces with the same algorithm, so torch, ONNX and llama.cpp get the same ids
(tests/runtimes/test_prompt_guarantee.py). Text that a tokenizer cannot keep as text is refused in one line.
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal import user_text
from genrecal.runtimes.base import RuntimeError_
from genrecal.runtimes.images import ImageRejected, open_images

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


def user_messages(n_images: int, text: str) -> list[dict]:
    """One user turn: images first (the HF convention), then the text."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def chat_template(processor) -> str | None:
    return getattr(processor, "chat_template", None) or getattr(tokenizer_of(processor), "chat_template", None)


def user_turn(processor, n_images: int, prompt: str) -> str:
    """The chat text of one user turn (images first, then the question) with the generation prompt,
    as the template writes it (what a client that tokenizes by itself is given)."""
    return tokenizer_of(processor).apply_chat_template(user_messages(n_images, prompt),
                                                       chat_template=chat_template(processor),
                                                       add_generation_prompt=True, tokenize=False)


def prepare_inputs(processor, images: list, prompt: str, return_tensors: str = "np") -> dict:
    """One user turn through the chat template and the processor -> arrays (input_ids [1, L], the
    family's pixel tensors, ...; numpy, or torch with return_tensors="pt"). Parity checks feed the same
    arrays to PyTorch. Control-token text in `prompt` stays text (module docstring); raises RuntimeError_
    (no usable chat template, text the tokenizer cannot keep as text) or ImageRejected (the processor
    refused the input) with one line."""
    images = open_images(images)
    control = user_text.hf_control_tokens(tokenizer_of(processor), chat_template(processor))
    try:
        chat = user_turn(processor, len(images), user_text.mark(prompt, control))
    except Exception as exc:  # noqa: BLE001 - ValueError (no template), jinja2's TemplateError, ...
        raise RuntimeError_(f"the processor has no usable chat template ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from None
    try:
        return user_text.process(processor, chat, images, control, return_tensors)
    except user_text.UserTextError as exc:
        raise RuntimeError_(str(exc)) from None
    except (ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise ImageRejected(f"the {type(processor).__name__} rejected the input: {_first_line(exc)}") from None


def prompt_segments(template: str, n_images: int, prompt: str, control, placeholder: str,
                    **tokens) -> list[list[tuple[str, bool, bool]]]:
    """For a runtime that tokenizes by itself (llama.cpp): the chat template around the marked prompt
    (rendered like llama-cpp-python's chat handler, `render_chat`), as `user_text.pieces`, cut at each
    image placeholder the template wrote: n_images + 1 lists, the text before, between and after the images."""
    from jinja2.exceptions import TemplateError

    from genrecal.artifacts.gguf_pair.prompt import render_chat

    try:
        chat = render_chat(template, user_messages(n_images, user_text.mark(prompt, control)), **tokens)
    except TemplateError as exc:
        raise RuntimeError_(f"the chat template failed ({type(exc).__name__}: {_first_line(exc)})") from None
    segments = user_text.split_at(user_text.pieces(chat, control), placeholder)
    if len(segments) != n_images + 1:
        raise RuntimeError_(f"chat template rendered {len(segments) - 1} image placeholders {placeholder!r} for "
                            f"{n_images} image(s)")
    return segments


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
