"""What each model is given for conversations as people have them: real zoo processors, real templates."""
from pathlib import Path

import pytest
import torch

from genrecal.data import DataError, Sample, load_samples
from genrecal.data.render import collate, render
from genrecal.distill.models import load_vlm
from genrecal.distill.objective import model_inputs

FIXTURES = Path(__file__).parent / "fixtures" / "layouts"


@pytest.fixture(scope="module")
def llava_samples():
    return {(s.index, s.turn): s for s in load_samples(FIXTURES / "llava.json")}


def image_tokens(vlm, enc) -> int:
    return int((enc.input_ids == vlm.image_token_id).sum())


@pytest.mark.parametrize("family, prompt, answer", [
    ("qwen2_vl", "<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
                 "<|vision_end|>What color is the shape?<|im_end|>\n<|im_start|>assistant\n", "red<|im_end|>"),
    ("smolvlm", "<|im_start|>System: Answer in one word.<end_of_utterance>\nUser:<image> What color is the shape?"
                "<end_of_utterance>\nAssistant:", " red<end_of_utterance>"),
])
def test_system_turn_is_rendered_by_the_model_template(zoo_dir, llava_samples, family, prompt, answer):
    vlm = load_vlm(zoo_dir(family), "student")
    enc = render(vlm.processor, llava_samples[(0, 0)], image_token_id=vlm.image_token_id)
    assert (enc.prompt_text, enc.answer_text) == (prompt, answer)
    assert vlm.tokenizer.decode(enc.input_ids[enc.answer_start:enc.answer_end]) == answer


def test_a_template_without_system_role_is_one_line(zoo_dir, llava_samples):
    vlm = load_vlm(zoo_dir("llava"), "teacher")
    with pytest.raises(DataError) as exc:
        render(vlm.processor, llava_samples[(0, 1)])
    assert exc.value.reason == "no_system_role" and "\n" not in str(exc.value)
    assert str(exc.value).startswith(f"{FIXTURES / 'llava.json'} record 0 turn 1: this model's chat template has "
                                     "no system role")
    enc = render(vlm.processor, llava_samples[(1, 0)])  # no system turn: rendered as before
    assert enc.prompt_text == "<s>USER: Is the sky blue? ASSISTANT:"


@pytest.mark.parametrize("family, per_image", [("qwen2_vl", 16), ("llava", 16), ("idefics3", 16)])
def test_each_turn_carries_only_the_images_up_to_it(zoo_dir, llava_samples, family, per_image):
    vlm = load_vlm(zoo_dir(family), "student")
    first, second = (render(vlm.processor, llava_samples[(2, t)], image_token_id=vlm.image_token_id) for t in (0, 1))
    assert (image_tokens(vlm, first), image_tokens(vlm, second)) == (0, per_image)
    assert "pixel_values" not in first.extras and "pixel_values" in second.extras


def test_a_placeholder_count_the_processor_refuses_is_one_line(zoo_dir):
    vlm = load_vlm(zoo_dir("qwen2_vl"), "student")
    sample = Sample([FIXTURES / "images" / "red_circle.png"],  # an image, but no placeholder
                    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "x.json", 7, 1)
    with pytest.raises(DataError) as exc:
        render(vlm.processor, sample)
    assert exc.value.reason == "processor_error" and "\n" not in str(exc.value)
    assert str(exc.value).startswith("x.json record 7 turn 1: the processor refused the sample with 1 image(s)")


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "idefics3", "internvl", "gemma3"])
def test_text_only_and_image_samples_share_a_batch(zoo_dir, llava_samples, family):
    """Each sample's features in a mixed batch equal its features alone (images stay with their sample)."""
    vlm = load_vlm(zoo_dir(family), "teacher")
    samples = [llava_samples[(1, 0)], llava_samples[(2, 1)], llava_samples[(2, 0)]]  # text, image, text
    encs = [render(vlm.processor, s, image_token_id=vlm.image_token_id) for s in samples]
    pad = vlm.tokenizer.pad_token_id or 0
    with torch.no_grad():
        mixed = vlm.model.model(**model_inputs(collate(encs, pad))).last_hidden_state  # [3, L, d]
        for i, enc in enumerate(encs):
            alone = vlm.model.model(**model_inputs(collate([enc], pad))).last_hidden_state[0]
            torch.testing.assert_close(mixed[i, : enc.length], alone, atol=1e-5, rtol=1e-4)
    assert image_tokens(vlm, encs[1]) > 0 and image_tokens(vlm, encs[0]) == 0
