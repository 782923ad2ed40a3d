"""Device parity (torch-free): Edge-LLM's llm_inference output against the host's PyTorch references.

    python -m genrecal.export.edgellm.device_cli compare ARTIFACT   # exit 1 and "PARITY FAILED" on a mismatch

llm_inference writes results/output.json: one response per request with `output_text` and, in Edge-LLM
0.11, `output_ids` (the generated token ids). Per prompt:
  - a failed request (Edge-LLM's "cannot handle this request" text or no output) fails;
  - with output_ids: the greedy tokens are compared step by step with the reference's; at the first
    difference the reference's top-k logits say whether it was a near-tie (Edge-LLM's token within
    TIE_MARGIN of the reference's top logit: fp16 engines may flip those) or a real mismatch;
  - without output_ids: the text must equal the reference's decoded greedy text.
The run passes when every prompt matches or diverges only at a near-tie. llm_inference exposes no logits,
so the device side cannot compare logit values: the top-k logits serve to judge divergences.
"""
from __future__ import annotations

import json
from pathlib import Path

from genrecal.artifacts import edgellm as layout

TIE_MARGIN = 0.05  # logits: an fp16 engine may pick either of two tokens this close under fp32
FAILED_TEXT = "TensorRT Edge LLM cannot handle this request"


def _strip_eos(tokens: list[int], eos: list[int]) -> list[int]:
    out = list(tokens)
    while out and out[-1] in eos:
        out.pop()
    return out


def compare_prompt(ref: dict, response: dict | None, eos: list[int], tie_margin: float = TIE_MARGIN) -> dict:
    """One prompt's verdict: status "match" | "near-tie" | "mismatch" | "failed", with where and why."""
    if response is None:
        return {"status": "failed", "detail": "no response for this request"}
    text = response.get("output_text", "")
    if FAILED_TEXT in text:
        return {"status": "failed", "detail": text[:200]}
    out = {"text_equal": text.strip() == ref["text"].strip(), "device_text": text, "reference_text": ref["text"]}
    prompt = response.get("formatted_complete_request")
    if prompt:
        out["prompt_equal"] = prompt == ref["prompt_text"]
    ids = response.get("output_ids")
    if ids is None:
        return {**out, "compared": "text",
                "status": "match" if out["text_equal"] else "mismatch",
                "detail": "texts equal" if out["text_equal"] else "texts differ (no output_ids to locate it)"}
    got, want = _strip_eos(ids, eos), _strip_eos(ref["tokens"], eos)
    n = min(len(got), len(want))
    first = next((i for i in range(n) if got[i] != want[i]), None)
    if first is None and len(got) == len(want):
        return {**out, "compared": "tokens", "status": "match", "tokens": len(want),
                "detail": f"{len(want)} tokens equal"}
    if first is None:  # one stopped earlier: a length difference, judged at the shorter end
        first = n
    step = ref["top_k"][first] if first < len(ref["top_k"]) else None
    device_tok = got[first] if first < len(got) else None
    margin = _margin(step, device_tok)
    tie = margin is not None and margin <= tie_margin
    detail = (f"step {first}: Edge-LLM {device_tok} vs PyTorch {want[first] if first < len(want) else 'end'}; "
              + (f"reference logit margin {margin:.4f}" if margin is not None else "Edge-LLM's token is not in the "
                 f"reference's top-{len(step['ids']) if step else 0}"))
    return {**out, "compared": "tokens", "status": "near-tie" if tie else "mismatch", "first_diff": first,
            "matched_tokens": first, "margin": margin, "detail": detail}


def _margin(step: dict | None, token: int | None) -> float | None:
    """How far below the reference's top-1 logit the device's token was (None: not in the top-k)."""
    if step is None or token is None or token not in step["ids"]:
        return None
    return round(step["logits"][0] - step["logits"][step["ids"].index(token)], 6)


def compare(reference: dict, output: dict, tie_margin: float = TIE_MARGIN) -> dict:
    """Every prompt of `reference` (reference.json) against `output` (llm_inference's output.json)."""
    responses = {r.get("request_idx", i): r for i, r in enumerate(output.get("responses", []))}
    eos = reference.get("eos_token_ids", [])
    rows = [{"prompt": i, "image": ref["image"], **compare_prompt(ref, responses.get(i), eos, tie_margin)}
            for i, ref in enumerate(reference["prompts"])]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("match", "near-tie", "mismatch", "failed")}
    return {"passed": counts["mismatch"] == 0 and counts["failed"] == 0, "counts": counts, "tie_margin": tie_margin,
            "prompts": rows, "logits_compared": False,
            "note": "llm_inference exposes no logits; top-k reference logits judge where tokens diverge"}


def compare_files(art: Path, output: Path | None = None) -> dict:
    art = Path(art)
    reference = json.loads((art / layout.PARITY_DIR / layout.PARITY_REFERENCE).read_text())
    out_path = Path(output) if output else art / layout.OUTPUT_JSON
    if not out_path.is_file():
        raise FileNotFoundError(f"{out_path} not found: run llm_inference first (./run.sh infer)")
    result = compare(reference, json.loads(out_path.read_text()))
    (out_path.parent / "parity.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_parity(result: dict) -> str:
    c = result["counts"]
    lines = [f"prompt {r['prompt']}: {r['status']:8s} {r['detail']}" for r in result["prompts"]]
    verdict = ("parity passed" if result["passed"] else "PARITY FAILED") + \
        f": {c['match']} match, {c['near-tie']} near-tie, {c['mismatch']} mismatch, {c['failed']} failed " \
        f"(of {len(result['prompts'])}; near-tie: within {result['tie_margin']} of the reference's top logit)"
    if not result["passed"]:
        verdict = "!" * 72 + "\n" + verdict + "\n" + "!" * 72
    return "\n".join([*lines, verdict])
