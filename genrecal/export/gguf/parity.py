"""PyTorch vs llama.cpp on easy-vqa: logits, greedy tokens, image embeddings, exact-match accuracy.

For each sample the prompt is rendered and tokenised by llama.cpp (libmtmd), and PyTorch is fed the
very same ids (each image chunk -> that many image tokens) with the HF image processor's pixels, so
any difference is numerical, not a tokenisation or template difference; whether HF's own processor
gives the same ids is reported separately (`prompt_ids_equal`). PyTorch decodes `steps` greedy tokens;
llama.cpp is teacher-forced on them (F32 KV cache) and its logits are compared at every step. Because
both run the same deterministic computation on the same prefix, "top-1 agrees at every step" is
exactly "llama.cpp's own greedy continuation is identical".
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrecal.data.scoring import exact_match, normalize_answer
from genrecal.export.gguf.layout import GgufExportError
from genrecal.artifacts.gguf_pair.prompt import PromptFormat

# bound on the full-precision text model vs PyTorch (mmproj F16, F32 KV cache), per sample:
#   max |logit diff| <= max(LOGIT_TOL, LOGIT_REL_TOL * max |logit|)
# The F16 image embeddings' rounding reaches the logits in proportion to their size, so a fixed bound refuses
# good conversions of trained models (a trained qwen2_vl student: 7.6e-3 at |logit| ~13, 5.8e-4 of it), while
# a conversion fault moves the logits by a share of their size and still fails (tests/export/test_gguf.py:
# one RMSNorm weight scaled by 1.05 gives 3.5e-3..5.2e-3 of |logit|, a re-permuted q far more). Measured on the
# fine-tuned gguf-size test students (|logit| ~10, F16): 7e-5 of |logit| (6.9e-4..7.6e-4). Up to |logit| 5
# the bound is the fixed one it replaced. A family route may set its own fixed part
# (GgufRoute.logit_tol); Qwen2-VL instead sets RUNTIME_TEXT_RMS_EPS (see qwen2_vl.py).
LOGIT_TOL = {"f32": 5e-3, "f16": 1e-2}
LOGIT_REL_TOL = {"f32": 1e-3, "f16": 2e-3}
EMBED_REL_TOL = 5e-3  # max |image-embedding diff| / max |embedding| (mmproj is F16); measured <= 7e-4
# teacher-forced top-1 agreement of the quantised artifact: a floor that catches broken conversions,
# not a quality bar (random tiny models measured 0.69-1.0 at Q4_K_M)
TOP1_FLOOR = {"q8_0": 0.8, "q4_k_m": 0.5}
ANSWER_TOKENS = 8
_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


@dataclass(frozen=True)
class PairSpec:
    """Everything but the text GGUF needed to run an exported pair."""

    mmproj: Path
    prompt: PromptFormat
    threads: int | None = None


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run PyTorch with the same thread budget as llama.cpp: on a busy machine more threads than free
    cores makes every op wait for descheduled workers (a 256-wide layer went from 14 ms to 330 ms)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def easy_vqa_samples(n: int, seed: int = 0) -> list[tuple[str, str, Path]]:
    from genrecal.data import load_easy_vqa_questions

    return load_easy_vqa_questions("test", limit=n, seed=seed)


def _image(path: Path):
    from genrecal.images import open_image

    return open_image(path)


def _session(spec: PairSpec, model_path: Path, f32_kv: bool):
    from genrecal.runtimes.llamacpp import LlamaCppSession

    return LlamaCppSession(model_path, spec.mmproj, spec.prompt, threads=spec.threads, f32_kv=f32_kv)


def _hf_inputs(processor, question: str, image) -> dict:
    from genrecal.runtimes.prompt import prepare_inputs

    return prepare_inputs(processor, [image], question, return_tensors="pt")  # as the torch runtime builds it


def _image_token_id(model) -> int:
    cfg = model.config
    return int(getattr(cfg, "image_token_id", None) or cfg.image_token_index)


def torch_greedy(model, inputs: dict, steps: int, stop_ids: set[int] = frozenset()):
    """Greedy decode by full forwards: (logits [n, vocab], tokens [n], image rows of inputs_embeds; with DeepStack
    (Qwen3-VL) each row followed by its DeepStack features, as llama.cpp's mmproj writes them)."""
    import torch

    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("embeds", kwargs.get("inputs_embeds"))
        captured.setdefault("deepstack", kwargs.get("deepstack_visual_embeds"))  # [n_image_rows, D] per level

    hook = model.get_decoder().register_forward_pre_hook(grab, with_kwargs=True)
    ids, logits, tokens = inputs["input_ids"], [], []
    image_id = _image_token_id(model)
    # image inputs only; per-token tensors are rebuilt for the growing sequence (Qwen2-VL's
    # mm_token_type_ids marks image positions with 1)
    pixels = {k: v for k, v in inputs.items() if k not in _PER_TOKEN}
    try:
        with torch.no_grad():
            for _ in range(steps):
                extra = dict(pixels)
                if "mm_token_type_ids" in inputs:
                    extra["mm_token_type_ids"] = (ids == image_id).long()
                out = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra)
                step = out.logits[0, -1].float()
                logits.append(step.numpy())
                tokens.append(int(step.argmax()))
                if tokens[-1] in stop_ids:
                    break
                ids = torch.cat([ids, ids.new_tensor([[tokens[-1]]])], dim=1)
    finally:
        hook.remove()
    rows = captured["embeds"][0][inputs["input_ids"][0] == image_id].float()
    if captured["deepstack"]:
        rows = torch.cat([rows, *(level.float() for level in captured["deepstack"])], dim=-1)
    return np.stack(logits), tokens, rows.numpy()


def with_text_rms_eps(model, eps: float):
    """A copy of `model` whose text RMSNorms use `eps` (what the runtime computes), for exact parity."""
    import copy

    from genrecal.families.base import text_model

    clone = copy.deepcopy(model)
    for module in text_model(clone).modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = eps
    return clone


def _layout_ids(layout, image_token_id: int) -> list[int]:
    ids = []
    for kind, x in layout:
        ids.extend(x if kind == "text" else [image_token_id] * int(x))
    return ids


def _compare_sample(session, model, processor, sample, steps: int) -> dict:
    import torch

    question, _answer, path = sample
    image = _image(path)
    hf = _hf_inputs(processor, question, image)
    pre = session.prefill(question, [image], keep_image_embeds=True)
    ids = _layout_ids(pre.layout, _image_token_id(model))
    inputs = {**hf, "input_ids": torch.tensor([ids])}
    n_img = int((hf["input_ids"][0] == _image_token_id(model)).sum())
    rows = [int(x) for k, x in pre.layout if k == "image"]
    if n_img != sum(rows):
        raise GgufExportError(f"llama.cpp made image blocks of {rows} rows, the HF processor {n_img} image "
                              "tokens: the image preprocessing differs (image size / merge / scale factor keys)")
    pt_logits, pt_tokens, pt_rows = torch_greedy(model, inputs, steps)
    ll_logits = [pre.logits] + [session.step(t) for t in pt_tokens[:-1]]
    ll_logits = np.stack(ll_logits)
    ll_rows = np.concatenate(pre.image_embeds)
    return {
        "max_abs_logit_diff": float(np.abs(ll_logits - pt_logits).max()),
        "first_token_logit_diff": float(np.abs(ll_logits[0] - pt_logits[0]).max()),
        "logit_scale": float(np.abs(pt_logits).max()),
        "top1": [int(a == b) for a, b in zip(ll_logits.argmax(-1), pt_tokens)],
        "image_embed_max_diff": float(np.abs(ll_rows - pt_rows).max()),
        "image_embed_scale": float(np.abs(pt_rows).max()),
        "prompt_ids_equal": hf["input_ids"][0].tolist() == ids,
        "torch_tokens": pt_tokens,
    }


def compare(model, processor, spec: PairSpec, model_path: Path, data, steps: int) -> dict:
    """Per-step logits and top-1 (teacher-forced on PyTorch's greedy tokens), F32 KV cache."""
    with _session(spec, model_path, f32_kv=True) as session, torch_threads(spec.threads):
        rows = [_compare_sample(session, model, processor, s, steps) for s in data]
        tok = _tokenizer_agreement(session, processor.tokenizer, data)
    top1 = [x for r in rows for x in r["top1"]]
    return {
        "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
        "first_token_logit_diff": max(r["first_token_logit_diff"] for r in rows),
        "logit_scale": max(r["logit_scale"] for r in rows),
        "max_rel_logit_diff": max(relative_logit_diff(r) for r in rows),
        "per_sample_logit_diff": [[r["max_abs_logit_diff"], r["logit_scale"]] for r in rows],  # [diff, max |logit|]
        "top1_agreement": sum(top1) / len(top1),
        "greedy_identical": sum(all(r["top1"]) for r in rows),  # samples whose whole continuation matched
        "image_embed_max_diff": max(r["image_embed_max_diff"] for r in rows),
        "image_embed_rel_diff": max(r["image_embed_max_diff"] / max(r["image_embed_scale"], 1e-12) for r in rows),
        "prompt_ids_equal": all(r["prompt_ids_equal"] for r in rows),
        "tokenizer_agreement": tok,
        "kv_cache": "f32",
        "per_sample_top1": [r["top1"] for r in rows],
    }


def _tokenizer_agreement(session, tokenizer, data) -> str:
    """Plain-text tokenisation llama.cpp vs HF on the questions, answers and a few edge strings."""
    texts = [q for q, _, _ in data] + [a for _, a, _ in data] + ["Is there a red circle?", "  two  spaces", "x\n\ny"]
    same = sum(session.llama.tokenize(t.encode(), add_bos=False, special=False) ==
               tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts)
    return f"{same}/{len(texts)}"


def accuracy(model, processor, spec: PairSpec, model_path: Path, limit: int, seed: int = 1) -> dict:
    """Exact-match accuracy on `limit` easy-vqa test questions: PyTorch (HF processor path) and the
    artifact (genrecal's llama.cpp path, default F16 KV cache, as the runtime runs it)."""
    if limit <= 0:
        return {"n": 0}
    data = easy_vqa_samples(limit, seed)
    eos = {i for i in (processor.tokenizer.eos_token_id,) if i is not None}
    pt_answers, ll_answers = [], []
    with _session(spec, model_path, f32_kv=False) as session, torch_threads(spec.threads):
        for question, _answer, path in data:
            image = _image(path)
            _, tokens, _ = torch_greedy(model, _hf_inputs(processor, question, image), ANSWER_TOKENS, eos)
            pt_answers.append(processor.tokenizer.decode(tokens, skip_special_tokens=True))
            pre = session.prefill(question, [image])
            ids = session.greedy_ids(pre.logits, ANSWER_TOKENS)
            ll_answers.append(session.detokenize(ids).decode("utf-8", errors="replace"))
    gold = [normalize_answer(a) for _, a, _ in data]
    return {
        "n": len(data),
        "torch_exact_match": sum(normalize_answer(p) == g for p, g in zip(pt_answers, gold)) / len(data),
        "gguf_exact_match": sum(normalize_answer(p) == g for p, g in zip(ll_answers, gold)) / len(data),
        "answer_agreement": sum(exact_match(p, q) for p, q in zip(pt_answers, ll_answers)) / len(data),
        "examples": [{"q": q, "gold": a, "torch": p, "gguf": g}
                     for (q, a, _), p, g in list(zip(data, pt_answers, ll_answers))[:3]],
    }


def relative_logit_diff(sample: dict) -> float:
    """max |logit diff| / max(1, max |logit|) of one sample (or of maxima over samples, an upper bound)."""
    return sample["max_abs_logit_diff"] / max(sample["logit_scale"], 1.0)


def logit_bound(precision: str, scale: float, logit_tol: dict | None = None) -> float:
    """The largest |logit diff| allowed for a sample whose largest |logit| is `scale` (see LOGIT_TOL)."""
    return max((logit_tol or LOGIT_TOL)[precision], LOGIT_REL_TOL[precision] * scale)


def enforce(result: dict, quant: str, logit_tol: dict | None = None, embed_tol: float | None = None) -> None:
    """Raise GgufExportError when a check fails; record thresholds and `passed` in `result`.
    logit_tol / embed_tol: a family's own tolerances (default LOGIT_TOL, the fixed part of the logit bound, and
    EMBED_REL_TOL)."""
    embed_tol = embed_tol or EMBED_REL_TOL
    ref = result["reference"]
    prec = ref["precision"]
    samples = ref.get("per_sample_logit_diff") or [[ref["max_abs_logit_diff"], ref["logit_scale"]]]
    worst = max(samples, key=lambda ds: ds[0] - logit_bound(prec, ds[1], logit_tol))  # the largest excess
    bound = logit_bound(prec, worst[1], logit_tol)
    fixed = (logit_tol or LOGIT_TOL)[prec]
    result["thresholds"] = {"max_abs_logit_diff": max(logit_bound(prec, scale, logit_tol) for _, scale in samples),
                            "logit_bound": f"per sample max({fixed}, {LOGIT_REL_TOL[prec]} x max |logit|)",
                            "image_embed_rel_diff": embed_tol, "greedy_identical": "all samples",
                            "tokenizer_agreement": "all strings"}
    if quant in TOP1_FLOOR:
        result["thresholds"]["top1_agreement"] = TOP1_FLOOR[quant]
    problems = []
    if worst[0] > bound:
        problems.append(f"{prec} logits differ from PyTorch by {worst[0]:.3g} > {bound:.3g} (max({fixed}, "
                        f"{LOGIT_REL_TOL[prec]} x |logit| {worst[1]:.3g}))")
    if ref["greedy_identical"] != result["samples"]:
        problems.append(f"greedy continuation differs on {result['samples'] - ref['greedy_identical']} sample(s)")
    same, total = map(int, ref["tokenizer_agreement"].split("/"))
    if same != total:
        problems.append(f"llama.cpp tokenises {total - same}/{total} test strings differently from HF")
    if ref["image_embed_rel_diff"] > embed_tol:
        problems.append(f"image embeddings differ by {ref['image_embed_rel_diff']:.3g} (relative) > {embed_tol}")
    art = result.get("artifact")
    if art is not None and art["top1_agreement"] < TOP1_FLOOR[quant]:
        problems.append(f"{quant} top-1 agreement {art['top1_agreement']:.2f} < {TOP1_FLOOR[quant]}")
    result["passed"] = not problems
    if problems:
        raise GgufExportError("GGUF parity check failed: " + "; ".join(problems))
