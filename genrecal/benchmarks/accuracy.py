"""Accuracy of an artifact through its runtime (the exported model, not the PyTorch one), so the
cost of quantisation shows: exact match and VQA soft accuracy.

    genrecal-bench accuracy --artifact out/export/gguf-q4_k_m --data easy-vqa --limit 200

Data: `easy-vqa` (its test split, seeded order) or a LLaVA JSON/JSONL file or dir as accepted by
`genrecal-distill --data` (first turn of each record: its images + question, the answer as the
reference). A record may carry extra reference answers under `answers` for VQA soft accuracy.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genrecal.benchmarks.latency import ROLES, pick_runtime, pick_threads
from genrecal.artifacts.profiles import get_profile
from genrecal.benchmarks.results import SCHEMA, artifact_info, computed_as, provenance, summarize
from genrecal.data.scoring import exact_match, normalize_answer, vqa_soft_accuracy
from genrecal.errors import GenrecalError
from genrecal.runtimes import BACKENDS
from genrecal.runtimes.torch_device import DEVICES, DTYPES

N_EXAMPLES = 20  # predictions kept in the result for eyeballing


@dataclass
class AccuracyConfig:
    artifact: str
    """Artifact dir: an HF model dir or one `genrecal-export` output (e.g. OUT/onnx-int8)."""
    data: str = "easy-vqa"
    """`easy-vqa` (test split) or a LLaVA JSON/JSONL file or dir."""
    limit: int | None = 100
    """First N questions (easy-vqa: after a shuffle seeded by `seed`); None: all."""
    seed: int = 0
    """Seeds easy-vqa's shuffle."""
    runtime: str | None = field(default=None, metadata={"choices": tuple(BACKENDS)})
    """Runtime; default: the profile's if the artifact's format allows it, else the format's."""
    threads: int | None = None
    """CPU threads; default: the profile's (host: every usable core)."""
    device: str | None = field(default=None, metadata={"choices": DEVICES})
    """torch runtime only: where to compute (None: auto = CUDA if present)."""
    dtype: str | None = field(default=None, metadata={"choices": tuple(DTYPES)})
    """torch runtime only: compute dtype (None: auto = the checkpoint's on CUDA, fp32 on CPU)."""
    profile: str = "host"
    """Device profile (genrecal.artifacts.profiles; an unknown name lists them)."""
    max_new_tokens: int = 8
    """Longest generated answer in tokens."""
    role: str | None = field(default=None, metadata={"choices": ROLES})
    """For the report's teacher vs student (default: student for exports, model for HF dirs)."""
    label: str | None = None
    """Name in reports (default: '<role> <runtime> <precision>')."""

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise GenrecalError(f"--limit must be >= 1, got {self.limit}")
        if self.max_new_tokens < 1:
            raise GenrecalError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Question:
    images: list[str]
    question: str
    answers: list[str]


def load_questions(data: str, limit: int | None, seed: int = 0) -> list[Question]:
    if data == "easy-vqa":
        from genrecal.data import load_easy_vqa_questions

        return [Question([str(p)], q, [a]) for q, a, p in load_easy_vqa_questions("test", limit, seed)]
    from genrecal.data import IMAGE_PLACEHOLDER, load_samples

    questions = []
    extra = _extra_answers(Path(data))
    for s in load_samples(data):
        if s.turn != 0:
            continue  # one question per record: the first user turn
        text = s.question_messages[-1]["content"].replace(IMAGE_PLACEHOLDER, "").strip()
        questions.append(Question([str(p) for p in s.images], text, [s.answer, *extra.get(s.index, [])]))
        if limit is not None and len(questions) >= limit:
            break
    if not questions:
        raise GenrecalError(f"{data}: no questions to evaluate")
    return questions


def _extra_answers(path: Path) -> dict[int, list[str]]:
    """Record index -> its `answers` list (more references), for a .json list file; else {}."""
    if path.is_dir():
        path = path / "data.json"
    if path.suffix != ".json" or not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # load_samples reports the real problem
    return {i: [str(a) for a in r["answers"]] for i, r in enumerate(records)
            if isinstance(r, dict) and isinstance(r.get("answers"), list)}


def run_accuracy(cfg: AccuracyConfig, log=print) -> dict:
    from genrecal import runtimes
    from genrecal.runtimes import sysinfo

    profile = get_profile(cfg.profile)
    runtime, warnings = pick_runtime(profile, cfg.runtime, cfg.artifact)
    threads = pick_threads(profile, cfg.threads, warnings)
    info = artifact_info(cfg.artifact, runtime, cfg.role, cfg.label)
    questions = load_questions(cfg.data, cfg.limit, cfg.seed)
    rt = runtimes.load(cfg.artifact, runtime, threads, device=cfg.device, dtype=cfg.dtype)
    info = computed_as(info, rt, cfg.label)
    em = soft = 0.0
    examples, timings = [], []
    t0 = time.perf_counter()
    for i, q in enumerate(questions):
        gen = rt.generate(q.images, q.question, cfg.max_new_tokens)
        hit, score = exact_match(gen.text, q.answers[0]), vqa_soft_accuracy(gen.text, q.answers)
        em, soft = em + hit, soft + score
        timings.append(gen.timing.as_dict())
        if len(examples) < N_EXAMPLES:
            examples.append({"question": q.question, "answers": q.answers, "prediction": gen.text,
                             "normalized": normalize_answer(gen.text), "exact_match": bool(hit)})
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{len(questions)}: exact match {em / (i + 1):.3f}")
    n = len(questions)
    keys = ("ttft_ms", "decode_tok_s", "e2e_ms", "vision_encode_ms", "tokens_out")
    return {
        "kind": "accuracy", "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "artifact": info, "profile": profile.as_dict(), "genrecal": provenance(),
        "config": {**asdict(cfg), "runtime": runtime, "threads": getattr(rt, "threads", threads)},
        "device": sysinfo.device_info(getattr(rt, "threads", threads)),
        "n": n, "exact_match": em / n, "vqa_soft_accuracy": soft / n, "wall_s": time.perf_counter() - t0,
        "summary": {k: summarize([t[k] for t in timings]) for k in keys},
        "peak_rss_mb": max(t["peak_rss_mb"] for t in timings), "examples": examples, "warnings": warnings,
    }


def format_accuracy(result: dict) -> str:
    a = result["artifact"]
    return (f"{a['label']} on {result['config']['data']} ({result['n']} questions): "
            f"exact match {result['exact_match']:.3f}, VQA soft accuracy {result['vqa_soft_accuracy']:.3f}, "
            f"median decode {result['summary']['decode_tok_s']['median']:.1f} tok/s")
