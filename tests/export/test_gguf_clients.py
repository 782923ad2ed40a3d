"""genrecal's GGUF pairs in llama.cpp's own clients: llama-cpp-python's MTMDChatHandler, llama-mtmd-cli, llama-server.

    python -m pytest tests/export/test_gguf_clients.py -q

What the export checks before it writes (every token libmtmd looks up for the projector; a chat template the
clients can apply), the zoo vocabularies that satisfy it, MTMDChatHandler on smolvlm, qwen2_vl and qwen3_5, and one
family/precision through each client of the matrix (benchmarks/gguf_client_matrix.py) where
scripts/build_llama_tools.sh has built llama-mtmd-cli and llama-server (skipped, with the reason, otherwise).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from genrecal import zoo  # noqa: E402
from genrecal.benchmarks import gguf_clients as gc  # noqa: E402
from genrecal.export.gguf import GgufExportError, export_gguf  # noqa: E402
from genrecal.export.gguf.tokenizer import (  # noqa: E402
    MEDIA_MARKER,
    check_client_template,
    check_libmtmd_tokens,
    has_single_token,
)
from genrecal.families import get_family  # noqa: E402
from genrecal.families.idefics3 import LIBMTMD_LOOKUPS  # noqa: E402

STEPS = 8
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample():
    from genrecal.data import load_easy_vqa_questions

    question, _, image = load_easy_vqa_questions("test", limit=1, seed=1)[0]
    return image, question


@pytest.fixture(scope="module")
def pair(zoo_dir, tmp_path_factory):
    """pair(family) -> an f16 GGUF export of the family's gguf-size zoo model (no parity check: fast)."""
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            out = tmp_path_factory.mktemp("gguf-clients") / family
            export_gguf(zoo_dir(family, "gguf"), out, "f16", check=False)
            made[family] = out
        return made[family]

    return get


# ---- the vocabulary libmtmd needs ----
@pytest.mark.parametrize("family", ["smolvlm", "idefics3"])
def test_zoo_vocabulary_has_what_libmtmd_looks_up(family):
    """Real SmolVLM / Idefics3 vocabularies hold "\\n\\n" as one ordinary token (libmtmd looks it up before every
    overview image); the zoo's trained byte-level BPE gets it by one appended merge, nothing else moves."""
    spec = get_family(family).tokenizer
    tok = zoo.train_tokenizer(spec)
    assert all(has_single_token(tok, t) for t in LIBMTMD_LOOKUPS)
    assert tok.tokenize("\n\n") == ["ĊĊ"] and tok.convert_tokens_to_ids("ĊĊ") == spec.vocab_size
    plain = zoo.train_tokenizer(dataclasses.replace(spec, whole_tokens=()))
    assert not has_single_token(plain, "\n\n")
    text = "What colour is the shape?\nIt is red.\n\n"
    assert tok(text[:-2])["input_ids"] == plain(text[:-2])["input_ids"]  # only text with "\n\n" changes
    assert tok(text)["input_ids"][-1] == spec.vocab_size


def test_export_refuses_a_vocabulary_libmtmd_cannot_use(tmp_path, monkeypatch):
    """Before writing anything: one line naming the token, the projector and what the clients would do."""
    monkeypatch.setattr(zoo, "add_whole_tokens", lambda tok, texts: tok)  # the zoo as it was: no "\n\n" token
    src = zoo.build_to_dir("smolvlm", tmp_path / "old-vocab", size="tiny", seed=0)
    with pytest.raises(GgufExportError, match=r"no single token for '\\n\\n'.*idefics3 projector.*GGML_ASSERT"):
        export_gguf(src, tmp_path / "out", "f16", check=False)
    assert not (tmp_path / "out").exists()


def test_libmtmd_token_check_names_every_missing_token():
    tok = zoo.train_tokenizer(dataclasses.replace(get_family("smolvlm").tokenizer, whole_tokens=()))
    with pytest.raises(GgufExportError, match="'\\\\n\\\\n', '<nope>'"):
        check_libmtmd_tokens(tok, ("\n\n", "<fake_token_around_image>", "<nope>"), "idefics3")
    check_libmtmd_tokens(tok, ("\n", "<fake_token_around_image>", "<global-img>"), "idefics3")


# ---- the chat template llama.cpp's clients apply ----
def test_template_that_drops_the_image_in_clients_is_refused():
    """llama.cpp's clients hand the image over as text holding the media marker, never as an image part."""
    images_only = ("{% for m in messages %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
                   "{% elif p['type'] == 'text' and p['text'] != '" + MEDIA_MARKER + "' %}{{ p['text'] }}"
                   "{% endif %}{% endfor %}{% endfor %}")
    with pytest.raises(GgufExportError, match="loses the image or the question when llama-cpp-python's MTMDChatHandler"):
        check_client_template(images_only, "<image>")
    lists_only = ("{% for m in messages %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
                  "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endfor %}")
    with pytest.raises(GgufExportError, match="llama-server / llama-mtmd-cli"):
        check_client_template(lists_only, "<image>")


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "smolvlm", "idefics3",
                                    "internvl", "llava"])
def test_client_template_notes(family):
    """Qwen2-VL's template (every Qwen family's) renders the same text whichever way the image arrives; the zoo's
    Idefics3/SmolVLM, InternVL and LLaVA templates space the image differently in the clients, and the manifest
    says so."""
    fam = get_family(family)
    notes = check_client_template(fam.chat_template, fam.gguf.image_placeholder)
    differs = [n for n in notes if "renders the prompt as" in n]
    assert (differs == []) == family.startswith("qwen"), notes
    builtin = [n for n in notes if "built-in" in n]
    assert bool(builtin) == (family in ("idefics3", "llava")), notes


# ---- llama-cpp-python's MTMDChatHandler (no build needed) ----
@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_5", "smolvlm"])
def test_mtmd_chat_handler_runs_the_pair(family, pair, sample):
    """The issue's failure (smolvlm: llama_decode returned -1 on the missing "\\n\\n" token) is gone; qwen2_vl's
    and qwen3_5's prompts are genrecal's, so they also decode genrecal's greedy tokens (qwen3_5: llama.cpp's hybrid
    Gated DeltaNet body behind the handler's M-RoPE image positions)."""
    image, question = sample
    out = pair(family)
    got = gc.mtmd_chat_handler(out, image, question, STEPS)
    assert "error" not in got, got
    ref = gc.genrecal_llamacpp(out, image, question, STEPS)
    if family != "smolvlm":
        assert got["prompt_text"] == ref["prompt_text"] and got["tokens"] == ref["tokens"]
    else:  # the zoo template spaces the image differently there (recorded in the manifest's notes)
        notes = json.loads((out / "genrecal_manifest.json").read_text())["extra"]["notes"]
        assert any("MTMDChatHandler renders the prompt as" in n for n in notes)


# ---- llama.cpp's own binaries (scripts/build_llama_tools.sh) ----
@pytest.fixture(scope="module")
def tools():
    why = gc.tools_missing()
    if why:
        pytest.skip(why)
    return gc.llama_tools()


def _matrix():
    """benchmarks/gguf_client_matrix.py as a module."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gguf_client_matrix
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return gguf_client_matrix


def test_matrix_update_keeps_the_rows_of_families_not_rerun():
    """--update: the rerun family's rows and exports replace the JSON's, every other family's stay, in the registry's
    family order; a record of another run (other steps) is refused."""
    matrix = _matrix()
    run = {"samples": [{"question": "q", "image": "1.png"}], "steps": 8, "sft_steps": 50}
    old = {**run, "exports": {"qwen2_vl (gguf)": "a", "smolvlm (gguf)": "b", "qwen3_5 (gguf)": "old"},
           "rows": [{"family": f, "client": c} for f in ("qwen2_vl", "qwen3_5", "smolvlm") for c in ("x", "y")]}
    new = {**run, "exports": {"qwen3_5 (gguf)": "new"}, "rows": [{"family": "qwen3_5", "client": c, "new": True}
                                                                 for c in ("x", "y")]}
    got = matrix.merged(old, new)
    assert [(r["family"], r["client"], "new" in r) for r in got["rows"]] == [
        ("qwen2_vl", "x", False), ("qwen2_vl", "y", False), ("qwen3_5", "x", True), ("qwen3_5", "y", True),
        ("smolvlm", "x", False), ("smolvlm", "y", False)]
    assert got["exports"] == {"qwen2_vl (gguf)": "a", "qwen3_5 (gguf)": "new", "smolvlm (gguf)": "b"}
    with pytest.raises(SystemExit, match="steps"):
        matrix.merged({**old, "steps": 16}, new)


def test_matrix_row_per_client(tools, tmp_path, sample):
    """benchmarks/gguf_client_matrix.py on qwen2_vl f16 (the untrained zoo model: it repeats one byte token, which
    still tells prompts apart): every client loads the pair and decodes genrecal's greedy tokens (the CLI: text)."""
    matrix = _matrix()
    rows, facts = matrix.variant_rows("qwen2_vl", "gguf", tmp_path, [sample], STEPS, 0, tools, precisions=("f16",))
    assert [r["client"] for r in rows] == list(matrix.CLIENTS)
    assert all(r["loads"] for r in rows), [r.get("error") for r in rows]
    assert all(r["same_as_genrecal"] == 1 for r in rows), [(r["client"], r["samples"]) for r in rows]
    assert [r["compared"] for r in rows] == ["tokens", "tokens", "text", "tokens", "tokens"]
    assert all(r["same_prompt_text"] is not False for r in rows)
    assert len(rows[0]["samples"][0]["genrecal_tokens"]) == STEPS
    assert facts["f16"]["parity"]["greedy_identical"] is not None
    assert "refused" not in matrix.pivot(rows, ("f16",))
