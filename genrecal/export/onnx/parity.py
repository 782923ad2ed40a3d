"""Numerical checks of an ONNX artifact against the PyTorch student it came from.

Reference: `AutoModelForImageTextToText` in eager attention, on easy-vqa test images with their
questions, fed the *same* processor arrays as the artifact. Per artifact:
- logits at prefill (every prompt position) and at every decode step, teacher-forced on the
  PyTorch greedy tokens -> max abs diff and top-1 agreement;
- a free-running greedy continuation (16 tokens, stops at EOS) compared with HF
  `generate(do_sample=False)` (no `min_new_tokens`, which would mask EOS and change tokens);
- exact-match accuracy on a small easy-vqa slice, for PyTorch and for the artifact;
- top-1 agreement on >= 256 teacher-forced tokens of real English text (export/text_agreement.py),
  recorded, not a pass criterion (tiny random models have no language statistics to keep).
Pass criteria are stated once, in TOLERANCES.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from genrecal.data import load_easy_vqa_questions
from genrecal.data.scoring import exact_match
from genrecal.export.text_agreement import TextAgreementError, TextReference, agreement, torch_text_reference
from genrecal.runtimes.onnxruntime import OnnxRuntime
from genrecal.runtimes.prompt import prepare_inputs

PARITY_SAMPLES = 3
NEW_TOKENS = 16
ACCURACY_QUESTIONS = 20
ACCURACY_TOKENS = 8

# fp32 must match PyTorch in absolute terms. fp16 rounds every weight and activation, so its error
# grows with the logits: it is bounded relative to the largest |logit| (measured 2.5-4.6e-4 on the
# random tiny zoo models, |logit| < 1; 2.6e-3 on a trained tiny LLaVA with larger logits).
# Quantised graphs are judged by agreement, not logit distance: random tiny models have near-tied
# logits (measured top-1 85-100% int8, 56-94% int4 over rebuilds of the zoo models; a trained tiny
# LLaVA/Qwen2-VL: 100% both), while a broken graph agrees on ~1/vocab of the steps.
TOLERANCES = {
    "fp32": {"max_abs_diff": 1e-3, "greedy_identical": 1.0},
    "fp16": {"max_rel_diff": 5e-3, "greedy_identical": 1.0},
    "int8": {"top1_agreement": 0.7},
    "int8w": {"top1_agreement": 0.7},
    "int4": {"top1_agreement": 0.4},
}


@dataclass
class Reference:
    """PyTorch results, computed once per student and reused for every precision."""

    encs: list[dict]  # processor outputs (numpy), fed to both sides
    prefill: list[np.ndarray]  # [L, V] per sample
    steps: list[list[np.ndarray]]  # [V] per generated token (step 0 = last prefill position)
    tokens: list[list[int]]
    acc_encs: list[dict] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    accuracy: float = 0.0
    transformers: str = ""
    text: TextReference | str | None = None  # the real-text reference, or why there is none


def _torch_inputs(enc: dict) -> dict:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in enc.items()}


def torch_reference(model, processor, samples: int = PARITY_SAMPLES,
                    questions: int = ACCURACY_QUESTIONS) -> Reference:
    import transformers

    ref = Reference([], [], [], [], transformers=transformers.__version__)
    gen = dict(do_sample=False, num_beams=1, pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        for question, _, image in load_easy_vqa_questions("test", limit=samples):
            enc = prepare_inputs(processor, [image], question)
            inputs = _torch_inputs(enc)
            ref.encs.append(enc)
            ref.prefill.append(model(**inputs).logits[0].float().numpy())
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, output_logits=True,
                                 return_dict_in_generate=True, **gen)
            ref.tokens.append(out.sequences[0, enc["input_ids"].shape[1]:].tolist())
            ref.steps.append([step[0].float().numpy() for step in out.logits])
        hits = 0
        for question, answer, image in load_easy_vqa_questions("test", limit=questions):
            enc = prepare_inputs(processor, [image], question)
            out = model.generate(**_torch_inputs(enc), max_new_tokens=ACCURACY_TOKENS, **gen)
            text = processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            hits += exact_match(text, answer)
            ref.acc_encs.append(enc)
            ref.answers.append(answer)
        try:
            ref.text = torch_text_reference(model, processor.tokenizer)
        except TextAgreementError as exc:
            ref.text = str(exc)
    ref.accuracy = hits / max(len(ref.answers), 1)
    return ref


def text_record(rt: OnnxRuntime, ref: Reference) -> dict:
    """Top-1 agreement with PyTorch fp32 on the real-text reference (one text-only prefill)."""
    if not isinstance(ref.text, TextReference):
        return {"note": ref.text or "no text reference"}
    return agreement(ref.text, rt.logits_for({"input_ids": ref.text.ids}, 1).prefill_logits)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def check_artifact(rt: OnnxRuntime, ref: Reference, precision: str) -> dict:
    """Compare one artifact with the reference; returns the manifest's `parity` record."""
    prefill_diff, step_diff, hits, total, same = 0.0, 0.0, 0, 0, 0
    scale = max(float(np.abs(a).max()) for a in [*ref.prefill, *(s for steps in ref.steps for s in steps)])
    for enc, prefill, steps, tokens in zip(ref.encs, ref.prefill, ref.steps, ref.tokens):
        forced = rt.logits_for(enc, len(tokens), forced=tokens)  # same prefix as PyTorch at every step
        prefill_diff = max(prefill_diff, _max_diff(forced.prefill_logits, prefill))
        step_diff = max([step_diff] + [_max_diff(a, b) for a, b in zip(forced.step_logits, steps)])
        hits += sum(int(a.argmax()) == t for a, t in zip(forced.step_logits, tokens))
        total += len(tokens)
        same += rt.logits_for(enc, NEW_TOKENS).tokens == tokens  # free-running greedy
    correct = 0
    for enc, answer in zip(ref.acc_encs, ref.answers):
        toks = [t for t, _, _ in rt.steps(enc, ACCURACY_TOKENS)]
        correct += exact_match(rt.processor.tokenizer.decode(toks, skip_special_tokens=True), answer)
    record = {
        "reference": f"PyTorch eager AutoModelForImageTextToText (transformers {ref.transformers})",
        "samples": len(ref.encs), "new_tokens": NEW_TOKENS,
        "max_abs_diff": max(prefill_diff, step_diff), "prefill_max_abs_diff": prefill_diff,
        "decode_max_abs_diff": step_diff, "logit_scale": scale,
        "max_rel_diff": max(prefill_diff, step_diff) / max(scale, 1.0),
        "top1_agreement": hits / max(total, 1), "top1_steps": total,
        "greedy_identical": same / max(len(ref.encs), 1),
        "accuracy": {"questions": len(ref.answers), "torch": ref.accuracy,
                     "artifact": correct / max(len(ref.answers), 1)},
        "tolerance": TOLERANCES[precision],
        "text_agreement": text_record(rt, ref),
    }
    record["passed"] = passes(record, TOLERANCES[precision])
    return record


def passes(record: dict, tolerance: dict) -> bool:
    ok = True
    for key in ("max_abs_diff", "max_rel_diff"):
        if key in tolerance:
            ok &= record[key] <= tolerance[key]
    if "greedy_identical" in tolerance:
        ok &= record["greedy_identical"] >= tolerance["greedy_identical"]
    if "top1_agreement" in tolerance:
        ok &= record["top1_agreement"] >= tolerance["top1_agreement"]
    return bool(ok)
