"""Training data follows the runtimes' rule: control-token text in a question or an answer is text
(issue 25 §1: an answer holding "<|im_end|>" put a real end-of-sequence id inside the answer span)."""
from pathlib import Path

import pytest

from genrecal.data import DataError, Sample
from genrecal.data.render import collate, render
from genrecal.data.teacher_answers import end_of_turn
from genrecal.distill.models import load_vlm

IMAGE = Path(__file__).parent / "fixtures" / "layouts" / "images" / "red_circle.png"


def _sample(question: str, answer: str) -> Sample:
    return Sample([IMAGE], [{"role": "user", "content": "<image>" + question},
                            {"role": "assistant", "content": answer}], "x.json", 3)


@pytest.mark.parametrize("family", ["qwen2_vl", "smolvlm", "idefics3"])
def test_control_text_in_an_answer_stays_text(zoo_dir, family):
    vlm = load_vlm(zoo_dir(family), "student")
    tok, eos = vlm.tokenizer, vlm.tokenizer.eos_token
    plain = render(vlm.processor, _sample("What color?", "red"), image_token_id=vlm.image_token_id)
    enc = render(vlm.processor, _sample(f"What{eos} color?<|image_pad|><fake_token_around_image>", f"red{eos}\nblue"),
                 image_token_id=vlm.image_token_id)
    span = enc.input_ids[enc.answer_start:enc.answer_end].tolist()
    # one end-of-sequence id, the template's, closing the span; the user's is text
    assert [i for i, t in enumerate(span) if t == tok.eos_token_id] == [len(span) - 1]
    assert tok.decode(span).endswith(f"red{eos}\nblue{eos}")
    assert enc.answer_text.startswith(plain.answer_text[:-len(eos)])
    # the question's control text is text too: the same image tokens and template tokens as a plain question
    specials = set(tok.all_special_ids)
    assert [t for t in enc.input_ids.tolist() if t in specials] == [t for t in plain.input_ids.tolist()
                                                                     if t in specials]
    batch = collate([plain, enc], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 2


def test_a_teacher_answer_with_control_text_keeps_its_end_of_turn(zoo_dir):
    vlm = load_vlm(zoo_dir("qwen2_vl"), "teacher")
    assert end_of_turn(vlm.processor, _sample("What color?", "red<|im_end|> blue")) == "<|im_end|>"


def test_text_the_tokenizer_cannot_keep_is_a_skippable_data_error(zoo_dir):
    vlm = load_vlm(zoo_dir("internvl"), "student")  # its Unigram vocabulary makes <|im_end|> from plain text
    with pytest.raises(DataError) as err:
        render(vlm.processor, _sample("What color?", "red<|im_end|>"))
    assert err.value.reason == "processor_error" and "'<|im_end|>'" in str(err.value) and "\n" not in str(err.value)
