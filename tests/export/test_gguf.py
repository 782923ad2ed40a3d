"""GGUF export + the llama.cpp runtime, on tiny "gguf"-size zoo models run by real llama-cpp-python.

    python -m pytest tests/export/test_gguf.py -q

Each family's zoo model is first fine-tuned for a few dozen steps on easy-vqa (seconds), so it answers
with real words and greedy decoding depends on the image and the question; an untrained model emits
one token forever, which would make top-1 agreement and accuracy meaningless. Text sizes (hidden 256,
FFN 768) make every quantised row a multiple of 256, so Q4_K_M really produces K-quants.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from genrecal.export.gguf import GgufExportError, GgufValidationError, export_gguf  # noqa: E402
from genrecal.export.gguf.layout import MMPROJ_FILE, MODEL_FILE  # noqa: E402
from genrecal.artifacts.manifest import ManifestError, load_manifest, write_manifest  # noqa: E402

FAMILIES = ["qwen2_vl", "idefics3", "smolvlm"]
SFT_STEPS = 50
# per-family bound on the full-precision logit difference (measured: qwen2_vl 5e-3..1.1e-2 because
# llama.cpp drops qwen2vl's RMSNorm eps, see test_qwen2vl_text_exact_with_llama_cpp_eps; the
# Idefics3-style Llama body < 1e-3)
FULL_PRECISION_TOL = {"qwen2_vl": 2e-2, "idefics3": 2e-3, "smolvlm": 2e-3}
F32_TOL = {"qwen2_vl": 2e-2, "idefics3": 1e-4, "smolvlm": 1e-4}  # F32 text weights (measured 9e-6 / 2.5e-5)


def _sft(src: str, dst: Path, steps: int = SFT_STEPS) -> Path:
    """Copy a zoo dir and teach it easy-vqa answers for `steps` batches of 8 (answer-only loss)."""
    from genrecal.zoo import teach_easy_vqa

    return teach_easy_vqa(src, dst, steps)


@pytest.fixture(scope="session")
def student_dir(zoo_dir, tmp_path_factory):
    """student_dir(family) -> a gguf-size zoo model briefly fine-tuned on easy-vqa (built once)."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = _sft(zoo_dir(family, "gguf"), tmp_path_factory.mktemp("sft") / family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def exported(student_dir, tmp_path_factory):
    """exported(family, quant) -> (artifact dir, manifest), exported with check=True once per session."""
    built: dict[tuple[str, str], tuple[Path, object]] = {}

    def get(family: str, quant: str):
        if (family, quant) not in built:
            out = tmp_path_factory.mktemp("gguf") / f"{family}-{quant}"
            manifest = export_gguf(student_dir(family), out, quant, check=True, threads=1)
            built[(family, quant)] = (out, manifest)
        return built[(family, quant)]

    return get


# ---- parity (recorded by export_gguf in the manifest; these tests assert the thresholds) ----
@pytest.mark.parametrize("family", FAMILIES)
def test_f16_matches_pytorch(family, exported):
    out, manifest = exported(family, "f16")
    assert {p.name for p in out.iterdir()} == {MODEL_FILE, MMPROJ_FILE, "genrecal_manifest.json"}
    assert (manifest.format, manifest.target, manifest.family, manifest.precision) == ("gguf", "phone", family, "f16")
    ref = manifest.parity["reference"]
    assert manifest.parity["passed"] and ref["precision"] == "f16" and ref["kv_cache"] == "f32"
    assert ref["max_abs_logit_diff"] < FULL_PRECISION_TOL[family]
    assert ref["top1_agreement"] == 1.0 and ref["greedy_identical"] == manifest.parity["samples"] == 3
    assert ref["image_embed_rel_diff"] < 5e-3
    assert ref["prompt_ids_equal"], "llama.cpp's prompt ids differ from the HF processor's"
    assert ref["tokenizer_agreement"] == "9/9"
    acc = manifest.parity["accuracy"]
    assert acc["n"] == 16 and acc["answer_agreement"] >= 0.9
    assert abs(acc["torch_exact_match"] - acc["gguf_exact_match"]) <= 0.1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantised_agreement_and_accuracy(family, quant, exported):
    _, manifest = exported(family, quant)
    parity = manifest.parity
    assert parity["reference"]["precision"] == "f32"  # the conversion itself, before quantisation
    assert parity["reference"]["max_abs_logit_diff"] < F32_TOL[family]
    art = parity["artifact"]
    assert art["top1_agreement"] >= {"q8_0": 0.95, "q4_k_m": 0.85}[quant]
    acc = parity["accuracy"]
    assert abs(acc["torch_exact_match"] - acc["gguf_exact_match"]) <= {"q8_0": 0.15, "q4_k_m": 0.3}[quant]


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_q4_k_m_tensors_are_real_k_quants(family, exported):
    out, manifest = exported(family, "q4_k_m")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out / MODEL_FILE)).tensors}
    weights = {n: t for n, t in types.items() if t != "F32"}
    assert set(weights.values()) == {"Q4_K", "Q6_K"}, weights
    assert all(types[n] == "F32" for n in types if n.endswith("norm.weight") or n.endswith(".bias"))
    quant = manifest.extra["quantization"]
    assert quant["fallbacks"] == [] and "warning" not in quant
    mm = {t.tensor_type.name for t in gguf.GGUFReader(str(out / MMPROJ_FILE)).tensors}
    assert mm == {"F16", "F32"}


def test_qwen2vl_text_exact_with_llama_cpp_eps(student_dir, tmp_path):
    """The qwen2vl conversion is exact once PyTorch uses the RMSNorm eps llama.cpp actually loads (0).

    If this starts failing with a large diff, llama.cpp reads qwen2vl's eps now: drop qwen2_vl.notes.
    """
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "qwen-f32"
    export_gguf(student_dir("qwen2_vl"), out, "f32", check=False)
    model = AutoModelForImageTextToText.from_pretrained(student_dir("qwen2_vl")).eval()
    for module in model.modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = 0.0 if module is not model.model.visual else module.variance_epsilon
    ids = list(range(10, 40))
    llm = Llama(str(out / MODEL_FILE), n_ctx=64, logits_all=True, type_k=0, type_v=0, n_threads=1, verbose=False)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert np.abs(got - want).max() < 1e-4


def test_k_quant_fallback_is_reported(zoo_dir, tmp_path):
    """Rows of 64 (the "tiny" size) cannot be Q4_K: llama.cpp silently picks other types; genrecal says so."""
    with pytest.warns(UserWarning, match="multiples of 256"):
        manifest = export_gguf(zoo_dir("idefics3", "tiny"), tmp_path / "warned", "q4_k_m", check=False)
    quant = manifest.extra["quantization"]
    assert quant["fallbacks"] and "warning" in quant and manifest.parity == {"checked": False}
    with pytest.raises(GgufExportError, match="multiples of 256"):
        export_gguf(zoo_dir("idefics3", "tiny"), tmp_path / "strict", "q4_k_m", check=False, strict_quant=True)
    assert not (tmp_path / "strict").exists()


def test_failed_parity_writes_nothing(student_dir, tmp_path, monkeypatch):
    from genrecal.export.gguf import parity

    monkeypatch.setattr(parity, "LOGIT_TOL", {"f32": 0.0, "f16": 0.0})
    monkeypatch.setattr(parity, "LOGIT_REL_TOL", {"f32": 0.0, "f16": 0.0})
    with pytest.raises(GgufExportError, match="parity check failed: f16 logits differ"):
        export_gguf(student_dir("idefics3"), tmp_path / "out", "f16", threads=1, accuracy_limit=0)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", ["scaled", "permuted"])
def test_logit_tolerance_relative_to_scale_still_fails_a_broken_conversion(fault, student_dir, tmp_path, monkeypatch):
    """The logit bound grows with the logits (parity.LOGIT_REL_TOL; a trained student's reach ~13, these ~10) yet a
    conversion fault still fails on the logits: one RMSNorm weight scaled by 1.05 (measured 5.2e-3 of |logit|,
    bound 2e-3), or block 0's q rows permuted a second time."""
    from genrecal.export.gguf import writer
    from genrecal.families.gguf_parts import rope_permute

    add = writer.TensorWriter.add

    def broken(self, name, array):
        if fault == "scaled" and name == "blk.1.ffn_norm.weight":
            array = array * 1.05
        elif fault == "permuted" and name == "blk.0.attn_q.weight":
            array = rope_permute(array, 4)
        add(self, name, array)

    monkeypatch.setattr(writer.TensorWriter, "add", broken)
    with pytest.raises(GgufExportError, match=r"parity check failed: f16 logits differ from PyTorch by .* x \|logit\|"):
        export_gguf(student_dir("idefics3"), tmp_path / "out", "f16", threads=1, accuracy_limit=0)
    assert not (tmp_path / "out").exists()


def test_llama_cpp_python_chat_handler_runs_the_pair(exported):
    """The GGUF pair is self-contained: llama-cpp-python's generic MTMDChatHandler reads its template."""
    import base64

    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import MTMDChatHandler

    from genrecal.data import load_easy_vqa_questions

    out, manifest = exported("qwen2_vl", "q8_0")
    question, _, image = load_easy_vqa_questions("test", limit=1, seed=1)[0]
    uri = "data:image/png;base64," + base64.b64encode(Path(image).read_bytes()).decode()
    handler = MTMDChatHandler(clip_model_path=str(out / MMPROJ_FILE), verbose=False)
    llm = Llama(str(out / MODEL_FILE), chat_handler=handler, n_ctx=512, n_threads=1, verbose=False)
    try:
        reply = llm.create_chat_completion(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": question}]}],
            max_tokens=8, temperature=0.0)
    finally:
        llm.close()
    answer = manifest.parity["accuracy"]["examples"][0]["gguf"]
    assert reply["choices"][0]["message"]["content"].strip() == answer.strip()
    # Idefics3-style pairs run there too (their vocabulary has the "\n\n" token libmtmd looks up); that client's
    # prompt differs from HF's (the zoo template's spacing, libmtmd's extra tile): the manifest says so
    from genrecal.benchmarks.gguf_clients import mtmd_chat_handler

    out, idefics = exported("idefics3", "f16")
    got = mtmd_chat_handler(out, image, question, 8)
    assert "error" not in got and got["tokens"], got
    assert any("MTMDChatHandler renders the prompt as" in note for note in idefics.extra["notes"])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_q4_k_m_accuracy_on_200_questions(family, student_dir, tmp_path):
    from genrecal.export.gguf import parity
    from genrecal.export.gguf.export import load_source
    from genrecal.artifacts.gguf_pair.prompt import PromptFormat

    out = tmp_path / "q4"
    manifest = export_gguf(student_dir(family), out, "q4_k_m", check=False)
    model, processor = load_source(student_dir(family))
    spec = parity.PairSpec(out / MMPROJ_FILE, PromptFormat.from_dict(manifest.extra["prompt_format"]), threads=1)
    with parity.torch_threads(1):
        acc = parity.accuracy(model, processor, spec, out / MODEL_FILE, limit=200, seed=2)
    assert acc["answer_agreement"] >= 0.9
    assert abs(acc["torch_exact_match"] - acc["gguf_exact_match"]) <= 0.05


# ---- the runtime ----
@pytest.mark.parametrize("family", FAMILIES)
def test_runtime_generates_like_pytorch(family, exported):
    from genrecal.data import load_easy_vqa_questions
    from genrecal.runtimes.base import Runtime
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    out, manifest = exported(family, "q8_0")
    question, _, image = load_easy_vqa_questions("test", limit=1, seed=1)[0]
    with LlamaCppRuntime(out, threads=1) as rt:
        assert isinstance(rt, Runtime) and rt.name == "llamacpp" and rt.family == family
        gen = rt.generate([image], question, max_new_tokens=8)
        stream = rt.generate([image], question, max_new_tokens=8, stream=True)
        pieces = list(stream)
    assert gen.text.strip().lower() == manifest.parity["accuracy"]["examples"][0]["gguf"].strip().lower()
    assert "".join(pieces) == gen.text and stream.result.token_ids == gen.token_ids
    t = gen.timing
    assert t.tokens_out == len(gen.token_ids) >= 1 and t.tokens_in > t.extra["image_tokens"] > 0
    for name in ("load_ms", "preprocess_ms", "vision_encode_ms", "prefill_ms", "prefill_tok_s", "ttft_ms",
                 "decode_ms_per_token", "decode_tok_s", "e2e_ms", "peak_rss_mb"):
        assert getattr(t, name) > 0, name
    assert t.ttft_ms <= t.e2e_ms and t.extra["llama_perf"]["n_p_eval"] > 0 and t.extra["threads"] == 1


def test_runtime_refuses_tampered_model(exported, tmp_path):
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    src, _ = exported("idefics3", "f16")
    copy = shutil.copytree(src, tmp_path / "tampered")
    with open(copy / MODEL_FILE, "r+b") as f:  # flip one byte of tensor data
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ManifestError, match="checksum mismatch for model.gguf"):
        LlamaCppRuntime(copy)


def _drop_tensor(src: Path, dst: Path, name: str) -> None:
    """Rewrite a GGUF without one tensor (keeps every key)."""
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for t in reader.tensors:
        if t.name != name:
            writer.add_tensor(t.name, t.data, raw_shape=list(reversed([int(x) for x in t.shape])),
                              raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_missing_mmproj_tensor_caught_before_load(exported, tmp_path):
    from genrecal.artifacts.gguf_pair.validate import validate_pair
    from genrecal.runtimes.llamacpp import LlamaCppRuntime

    src, manifest = exported("qwen2_vl", "f16")
    copy = shutil.copytree(src, tmp_path / "broken")
    _drop_tensor(src / MMPROJ_FILE, copy / MMPROJ_FILE, "v.blk.0.attn_q.weight")
    write_manifest(copy, load_manifest(src))  # a buggy exporter's dir: checksums fine, tensor missing
    with pytest.raises(GgufValidationError, match="v.blk.0.attn_q.weight"):
        validate_pair(copy / MODEL_FILE, copy / MMPROJ_FILE)
    # clip.cpp would segfault on this file; the runtime must stop at validation, in-process
    with pytest.raises(GgufValidationError, match="missing tensors llama.cpp needs"):
        LlamaCppRuntime(copy)


# ---- refusals (no model weights are loaded) ----
@pytest.mark.parametrize("model_type,why", [("llava_onevision", "llama.cpp has no support"),
                                            ("paligemma", "llama.cpp has no support"),
                                            ("mllama", "no GGUF writer")])
def test_unsupported_family_is_refused(model_type, why, tmp_path):
    (tmp_path / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    with pytest.raises(GgufExportError, match=why) as err:
        export_gguf(tmp_path, tmp_path / "out", "f16")
    assert "supported families: idefics3, internvl, llava, qwen2_5_vl, qwen2_vl, qwen3_5, qwen3_vl, smolvlm" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(GgufExportError, match="choose one of f32, f16, q8_0, q4_k_m"):
        export_gguf(tmp_path, tmp_path / "out", "q3_k")


def test_chat_template_must_loop_over_content():
    from genrecal.export.gguf.tokenizer import check_chat_template

    check_chat_template("{% for m in messages %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
                        "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endfor %}", "<image>")
    with pytest.raises(GgufExportError, match="must render each content part"):
        check_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}", "<image>")


def test_vision_ffn_as_wide_as_embedding_is_refused():
    from genrecal.families.gguf_parts import VisionSpec

    spec = VisionSpec("idefics3", 64, 64, 2, 4, 1e-6, 64, 8, 256, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(GgufExportError, match="ffn_up/ffn_down as swapped"):
        spec.check()


@pytest.mark.parametrize("family", ["qwen2_vl", "idefics3"])
def test_image_rule_replays_the_hf_resize(family, zoo_dir):
    """The runtime resizes with PIL to the size (and, for Idefics3, nearly the pixels) HF would use."""
    from PIL import Image
    from transformers import AutoProcessor

    from genrecal.families import get_family

    processor = AutoProcessor.from_pretrained(zoo_dir(family, "gguf"))
    fmt = get_family(family).gguf.prompt_format(processor.image_processor)
    rng = np.random.RandomState(0)
    for w, h in [(100, 50), (33, 140), (64, 64), (200, 90)]:
        image = Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8))
        fitted = fmt.fit_image(image)
        hf = processor.image_processor(images=[[image]], return_tensors="np")
        if family == "qwen2_vl":
            _, gh, gw = hf["image_grid_thw"][0]
            assert fitted.size == (gw * 8, gh * 8)
        else:
            pixels = (hf["pixel_values"][0, 0].transpose(1, 2, 0) * 0.5 + 0.5) * 255
            assert np.abs(np.asarray(fitted, dtype=np.float32) - pixels).max() <= 2.5


def test_rope_permutation_matches_interleaved_rotation():
    """HF rotates (x[i], x[i + d/2]); after the permutation llama.cpp's pairs (2i, 2i+1) are the same."""
    from genrecal.families.gguf_parts import rope_permute

    n_head, d = 2, 8
    w = np.arange(n_head * d * 3, dtype=np.float32).reshape(n_head * d, 3)
    p = rope_permute(w, n_head)
    for h in range(n_head):
        for i in range(d // 2):
            assert (p[h * d + 2 * i] == w[h * d + i]).all() and (p[h * d + 2 * i + 1] == w[h * d + i + d // 2]).all()
