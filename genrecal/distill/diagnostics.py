"""Does the student matter to the Recalibrator? The shuffled-question rise of L_ar, and reading it back.

On diagnostic steps (every `attn_mass_every` optimizer steps, the attention mass's cadence) of the
stages that run the main path (align, distill), the objective scores L_ar a second time, without
gradients, with each sample's student-question features z_qs replaced by those of another sample
of the same micro-batch: a cyclic shift (sample b gets sample b+1's), so no sample keeps its own
and no random number is drawn (a resumed run logs the same figures). The teacher answer part stays
the sample's own. The train log gets

- `ar_shuffled`: L_ar on the shuffled micro-batches (mean over the step's micro-batches on the main
  process, as `attn_q_mass`);
- `ar_shuffle_rise`: `ar_shuffled` minus the true L_ar of the same micro-batches, same weights.

A rise near 0 says the Recalibrator predicts the teacher's answer without the student's features;
a large rise says the student's features carry it. At batch size 1 there is nothing to shuffle:
both keys are logged as null, never a number.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

RISE, SHUFFLED = "ar_shuffle_rise", "ar_shuffled"
STAGES = ("align", "distill")


def shifted(n: int) -> list[int]:
    """The donor of each sample's question features: [1, 2, ..., n-1, 0] (a derangement for n >= 2)."""
    return [(b + 1) % n for b in range(n)]


def step_record(pairs: list[tuple[float, float]]) -> dict:
    """Log entries for one optimizer step from its micro-batches' (true L_ar, shuffled L_ar) pairs;
    an empty list (batch size 1) gives nulls."""
    if not pairs:
        return {SHUFFLED: None, RISE: None}
    return {SHUFFLED: sum(s for _, s in pairs) / len(pairs), RISE: sum(s - a for a, s in pairs) / len(pairs)}


def shuffle_rise(log_path: str | Path) -> dict | None:
    """Per stage (align, distill) of a run's train_log.jsonl: `{stage: {"mean", "first10", "last10",
    "ar_shuffled_mean", "steps", "null_steps"}}` over the steps that logged a rise (means in nats,
    first/last 10 such steps). A stage whose diagnostic steps were all null (batch size 1) gets
    `mean` etc. NaN and `null_steps` > 0; None when the log has no diagnostic step at all."""
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    out = {}
    for stage in STAGES:
        logged = [r for r in rows if r.get("stage") == stage and RISE in r]
        if not logged:
            continue
        vals = [r[RISE] for r in logged if r[RISE] is not None]
        shuffled = [r[SHUFFLED] for r in logged if r[SHUFFLED] is not None]
        out[stage] = {"mean": _mean(vals), "first10": _mean(vals[:10]), "last10": _mean(vals[-10:]),
                      "ar_shuffled_mean": _mean(shuffled), "steps": len(vals), "null_steps": len(logged) - len(vals)}
    return out or None


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
