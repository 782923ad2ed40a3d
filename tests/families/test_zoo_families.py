"""Every registered family builds a tiny model that reloads like a hub checkpoint and generates.

    python -m pytest tests/families -q
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

from genrecal import zoo
from genrecal.families import base, get_family, names, student_names
from genrecal.families.base import UnsupportedFamilyError

MESSAGES = [{"role": "user", "content": [
    {"type": "image"}, {"type": "text", "text": "What shape is in the image?"},
]}]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    """family name -> directory of its saved tiny model, built once per module."""
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = zoo.build_to_dir(family, tmp_path_factory.mktemp("zoo") / family, size="tiny", seed=0)
        return built[family]

    return get


def _image() -> Image.Image:
    return Image.fromarray(np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("family", names())
def test_tiny_reloads_renders_and_generates(family, zoo_dir):
    fam = get_family(family, role="zoo")
    out = zoo_dir(family)
    model = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out)

    assert model.config.model_type == fam.name
    assert type(model).__name__ == fam.model_class
    # a missing video-processor dependency makes AutoProcessor quietly return the bare tokenizer
    # (transformers' own processor for the model type: Qwen3.5 shares Qwen3-VL's)
    assert type(processor).__name__ == PROCESSOR_MAPPING_NAMES[fam.name]
    assert model.config.get_text_config().pad_token_id == processor.tokenizer.pad_token_id
    assert model.config.get_text_config().eos_token_id == processor.tokenizer.eos_token_id

    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[[_image()]], return_tensors="pt")  # nested per sample
    ids = inputs["input_ids"][0].tolist()
    image_id = base.image_token_id(processor, fam)
    assert image_id is not None and processor.tokenizer.convert_ids_to_tokens(image_id) == fam.image_token
    assert ids.count(image_id) > 0
    if processor.tokenizer.bos_token_id is not None:
        assert ids.count(processor.tokenizer.bos_token_id) == 1, "double <bos>"

    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, len(ids) + 4)  # tiny random models never emit eos this early here


@pytest.mark.parametrize("family", names())
def test_image_features_reach_the_logits(family):
    """A freshly built model must see its image (e.g. no zero-initialised projector)."""
    model, processor = zoo.build(family)
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    a = processor(text=[prompt], images=[[_image()]], return_tensors="pt")
    b = processor(text=[prompt], images=[[Image.new("RGB", (64, 64), (255, 0, 0))]], return_tensors="pt")
    with torch.no_grad():
        la, lb = model(**a).logits[0, -1], model(**b).logits[0, -1]
    assert not torch.allclose(la, lb)


def test_families_have_different_tokenizers(zoo_dir):
    """Learned (non-special) vocabularies differ pairwise, so teacher/student splits really differ."""
    learned = {}
    for family in names():
        tok = AutoProcessor.from_pretrained(zoo_dir(family)).tokenizer
        learned[family] = set(tok.get_vocab()) - set(tok.all_special_tokens) - set(tok.get_added_vocab())
    for a, b in itertools.combinations(names(), 2):
        assert learned[a] != learned[b], f"{a} and {b} learned the same vocabulary"


def test_unknown_student_family_lists_supported():
    with pytest.raises(UnsupportedFamilyError) as err:
        get_family("paligemma")
    for name in student_names():
        assert name in str(err.value)
    assert get_family("paligemma", role="teacher") is None


def test_teacher_only_families_refuse_the_student_role():
    teachers = [n for n in names() if n not in student_names()]
    assert "gemma3" in teachers
    for name in teachers:
        assert get_family(name, role="teacher").notes  # says why
        with pytest.raises(UnsupportedFamilyError):
            get_family(name)


@pytest.mark.parametrize("family", student_names())
def test_decoder_layer_runs_from_the_accessors(family):
    """What the Recalibrator does: rebuild the rotary, run one student decoder layer by hand, and
    match the body's own first-layer output."""
    fam = get_family(family)
    model, _ = zoo.build(family)
    body = base.text_model(model)
    text_config = model.config.get_text_config()
    # the first layer the Recalibrator could copy (hybrid bodies: the first attention layer)
    layer = base.attention_layers(body)[0]
    index = list(body.layers).index(layer)
    assert type(layer).__name__.endswith("DecoderLayer")
    assert base.final_norm_weight(model) is not None

    rotary = type(body.rotary_emb)(config=text_config)
    B, L, d = 2, 6, text_config.hidden_size
    embeds = torch.randn(B, L, d)  # [batch, seq, d]
    ids = torch.arange(L).expand(B, L)  # [batch, seq]
    causal = torch.full((L, L), torch.finfo(embeds.dtype).min).triu(1)
    mask = causal[None, None].expand(B, 1, L, L)  # [batch, 1, seq, seq], additive
    with torch.no_grad():
        states = body(inputs_embeds=embeds, output_hidden_states=True).hidden_states
        hidden, ref = states[index], states[index + 1]  # the layer's input and output inside the body
        out = layer(hidden, attention_mask=mask, position_ids=ids,
                    position_embeddings=rotary(hidden, fam.rope_position_ids(ids)))
    assert isinstance(out, torch.Tensor) and out.shape == (B, L, d)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", names())
def test_base_size_builds(family):
    fam = get_family(family, role="zoo")
    assert "base" in fam.sizes
    model, _ = zoo.build(family, size="base")
    assert model.config.get_text_config().hidden_size == 128
