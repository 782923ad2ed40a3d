"""Child-process entry, run by Edge-LLM's own interpreter: its quantiser calibrated on a local file.

    EDGELLM_PYTHON quantize_run.py --model-dir STAGE --output-dir QDIR --quantization int4_awq --calib calib.jsonl

calib.jsonl: one JSON object per line, {"text": "..."} and/or {"image": "/path.png", "question": "..."}
(genrecal's distillation data written out, or any local file). The generators are handed to
`tensorrt_edgellm.quantization.quantize_and_export` directly, so its default calibration sets, which it
downloads, are never used. Run as a file, never imported by genrecal (it imports tensorrt_edgellm).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--quantization", required=True)
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--num-samples", type=int, default=128)
    args = p.parse_args(argv)
    rows = _rows(args.calib)
    texts = [r["text"] for r in rows if r.get("text")]
    images = [(r["image"], r.get("question", "Describe the image.")) for r in rows if r.get("image")]
    if not texts and not images:
        sys.exit(f"{args.calib}: no 'text' or 'image' rows to calibrate on")

    def text_dataset():
        yield from texts or (q for _, q in images)

    def image_dataset():
        yield from images

    from tensorrt_edgellm.quantization import quantize_and_export

    quantize_and_export(model_dir=args.model_dir, output_dir=args.output_dir, quantization=args.quantization,
                        dtype="fp16", device="cuda", text_dataset=text_dataset,
                        image_dataset=image_dataset if images else None,
                        num_samples=min(args.num_samples, max(len(texts), len(images))))


if __name__ == "__main__":
    main(sys.argv[1:])
