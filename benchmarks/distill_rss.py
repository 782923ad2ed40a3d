"""Peak RSS of `genrecal-distill` with 200 vs 2,000 samples: lazy rendering keeps it flat.

    python benchmarks/distill_rss.py --work /tmp/rss [--sizes 200,2000] [--side 448] [--max-pixels 200704]

Writes N noise photos of SIDE x SIDE px with LLaVA-layout questions (one set per size), builds the
zoo's tiny LLaVA teacher and Qwen2-VL student and raises the student processor's pixel budget to
--max-pixels (448 x 448 by default: 784 image tokens at its patch 8, 4.8 MB of fp32 pixel_values
per sample, as a real processor gives), then runs `genrecal-distill --max-steps 4 --batch-size 4` in a child process
per size and prints each child's own peak RSS (VmHWM) and the ratio of the largest to the smallest.
Holding every rendered sample (what genrecal did before) would add ~4.8 MB per sample.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from genrecal.experiments.distill_scale import CHILD  # `genrecal ARGS` in a child printing its own VmHWM


def write_data(root: Path, n: int, side: int) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = root / "images" / f"{i}.png"
        if not path.exists():
            shade = Image.radial_gradient("L").resize((side, side))  # compresses well, unlike noise
            Image.merge("RGB", (shade, shade.rotate(90 * (i % 4)), Image.new("L", shade.size, i % 256))).save(path)
        records.append({"image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat shape is in the image?"},
            {"from": "gpt", "value": ["circle", "triangle", "rectangle"][i % 3]}]})
    (root / "data.json").write_text(json.dumps(records))
    return root / "data.json"


def models(work: Path, max_pixels: int) -> tuple[Path, Path]:
    from genrecal import zoo

    teacher = zoo.build_to_dir("llava", work / "teacher", seed=0)
    student = zoo.build_to_dir("qwen2_vl", work / "student", seed=0)
    cfg_path = student / "processor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["image_processor"]["size"]["longest_edge"] = max_pixels  # Qwen2-VL's pixel budget (a count, not a side)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return teacher, student




def peak_rss_mb(distill_args: list[str]) -> tuple[float, float]:
    """Run `genrecal distill ARGS` in a child that reports its own peak RSS; (MB, seconds)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "distill", *distill_args], check=True, capture_output=True,
                          text=True)
    kb = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("peak_rss_kb"))
    return kb / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--sizes", default="200,2000")
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--max-pixels", type=int, default=448 * 448)
    args = ap.parse_args()
    teacher, student = models(args.work, args.max_pixels)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        data = write_data(args.work / f"data-{n}", n, args.side)
        mb, seconds = peak_rss_mb(["--teacher", str(teacher), "--student", str(student), "--data", str(data),
                                   "--out", str(args.work / f"run-{n}-{time.time_ns()}"), "--max-steps", "4",
                                   "--batch-size", "4", "--no-progress"])
        rows.append((n, mb, seconds))
        print(f"{n:>6} samples: peak RSS {mb:8.1f} MB ({seconds:.0f} s)", flush=True)
    print(f"ratio largest/smallest peak RSS: {max(r[1] for r in rows) / min(r[1] for r in rows):.3f}")


if __name__ == "__main__":
    main()
