"""genrecal.user_text: the rule that user text is text (pure functions; the runtimes' test is
tests/runtimes/test_prompt_guarantee.py, training data's tests/data/test_render_user_text.py)."""
from __future__ import annotations

import pytest

from genrecal import user_text as ut

M0, M1 = ut.MARK_START, ut.MARK_END
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}{{ '<tool>' if tools }}")


def test_control_tokens_are_the_special_ones_and_those_the_template_writes():
    added = [("<|im_start|>", False), ("<|im_end|>", True), ("<tool>", False), ("<other>", False), ("\n\n", False)]
    assert ut.control_tokens(added, TEMPLATE) == ("<tool>", "<|im_end|>", "<|im_start|>")
    assert ut.control_tokens(added, None) == ("<|im_end|>",)


def test_marks_wrap_control_tokens_longest_first_and_cannot_be_forged():
    control = ("<a>", "<a><b>", "<b>")
    assert ut.mark("x<a><b>y<b>", control) == f"x{M0}<a><b>{M1}y{M0}<b>{M1}"
    assert ut.mark(f"{M0}<a>{M1}", control) == f"{M0}<a>{M1}"  # the forged marks dropped, then marked anew
    assert ut.mark(f"{M0}plain{M1}", control) == "plain"
    assert ut.unmark(ut.mark("x<a>y", control)) == "x<a>y"


def test_pieces_and_placeholders_never_cut_inside_user_text():
    chat = f"<s>U:<image>q {M0}<image>{M1} r{M1}t</s>"
    parts = ut.pieces(chat, ("<image>", "<s>", "</s>"))
    assert parts == [("<s>U:<image>q ", False, False), ("<image>", True, True), (" r", False, True),
                     ("t</s>", False, True)]  # the lone mark only breaks the text
    segments = ut.split_at(parts, "<image>")
    assert segments == [[("<s>U:", False, False)],
                        [("q ", False, False), ("<image>", True, True), (" r", False, True), ("t</s>", False, True)]]


class CharTokenizer:
    """One id per character; "<x>" is an added token (id 100) unless encoded as text."""

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            if text.startswith("<x>", i):
                ids.append(100)
                i += 3
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids

    def as_text(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def test_marked_pieces_are_encoded_as_text_after_a_newline():
    tok = CharTokenizer()
    chat = f"a<x>{M0}<x>{M1}b"
    ids = ut.encode_pieces(ut.pieces(chat, ("<x>",)), tok.encode, tok.as_text, [10], {100})
    assert ids == [ord("a"), 100, *map(ord, "<x>"), ord("b")]


def test_a_marked_piece_that_still_gives_a_control_id_is_refused_in_one_line():
    tok = CharTokenizer()
    with pytest.raises(ut.UserTextError) as err:
        ut.encode_pieces(ut.pieces(f"{M0}<x>{M1}", ("<x>",)), tok.encode, tok.encode, [10], {100})
    assert "'<x>'" in str(err.value) and "\n" not in str(err.value)
