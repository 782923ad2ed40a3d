"""`genrecal-bench`: latency, accuracy, on-device bundles and reports.

    genrecal-bench latency  --artifact PATH [--runtime R] [--threads N] [--profile P] [--warmup K]
                            [--runs N] [--device auto|cpu|cuda] [--dtype auto|fp32|bf16|fp16] [--json FILE]
    genrecal-bench accuracy --artifact PATH --data easy-vqa|FILE [--limit N] [--device D] [--dtype T] [--json FILE]
    genrecal-bench bundle   --artifact PATH --profile P --out DIR
    genrecal-bench report   RESULTS... --out DIR
    genrecal-bench quality  [--quick] [--seeds 0,1,2] [--out DIR]   (trains models; see quality.py)
    genrecal-bench quality-scenes [--quick] [--methods M,...] [--regimes R,...] [--jobs N] [--out DIR]
                            (multi-object scenes, gold vs teacher answers, TRL GOLD beside; quality_scenes.py)
    genrecal-bench distill-scale --work DIR [--batch-sizes 1,4]  (2B-shaped bf16 teacher; see distill_scale.py)
    genrecal-bench peers    --work DIR [--threads 1,2] [--repeats N] [--pairs P,...] [--json FILE] [--md FILE]
                            (genrecal's exports vs onnxruntime-genai's builder / llama.cpp's converter; peers.py)

PATH is an HF model dir (torch) or one `genrecal-export` output dir (runtime from its manifest).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genrecal.benchmarks.profiles import PROFILES
from genrecal.runtimes.torch_device import DEVICES, DTYPES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", required=True, help="HF model dir or one export dir (e.g. OUT/onnx-int8)")
    p.add_argument("--runtime", choices=("torch", "onnxruntime", "llamacpp", "tensorrt"),
                   help="default: the profile's runtime if the artifact's format allows it, else the format's")
    p.add_argument("--threads", type=int, help="CPU threads (default: the profile's; host: all usable cores)")
    p.add_argument("--device", choices=DEVICES, help="torch runtime: where to compute (default auto: CUDA if present)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="torch runtime: compute dtype (default auto: the "
                   "checkpoint's on CUDA, fp32 on CPU)")
    p.add_argument("--profile", default="host", help=f"device profile: {', '.join(PROFILES)} (default host)")
    p.add_argument("--role", choices=("teacher", "student", "model"), help="for the report's teacher vs student")
    p.add_argument("--label", help="name in reports (default: '<role> <runtime> <precision>')")
    p.add_argument("--json", help="write the result record to this file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrecal-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency", help="warm-up + N timed runs: median/p90 per phase, % of bandwidth bound")
    _common(lat)
    lat.add_argument("--warmup", type=int, default=1)
    lat.add_argument("--runs", type=int, default=5)
    lat.add_argument("--max-new-tokens", type=int, default=32, dest="max_new_tokens")
    lat.add_argument("--image", help="request image (default: easy-vqa's first test question)")
    lat.add_argument("--prompt", help="request text (default: that question)")
    lat.add_argument("--no-bandwidth", action="store_false", dest="measure_bandwidth",
                     help="skip measuring memory bandwidth (no %% of bound)")
    acc = sub.add_parser("accuracy", help="exact match + VQA soft accuracy of the artifact")
    _common(acc)
    acc.add_argument("--data", default="easy-vqa", help="easy-vqa or a LLaVA JSON/JSONL file or dir")
    acc.add_argument("--limit", type=int, default=100, help="first N questions (default 100)")
    acc.add_argument("--seed", type=int, default=0)
    acc.add_argument("--max-new-tokens", type=int, default=8, dest="max_new_tokens")
    bun = sub.add_parser("bundle", help="self-contained folder to run on a device")
    bun.add_argument("--artifact", required=True)
    bun.add_argument("--profile", required=True, help=", ".join(PROFILES))
    bun.add_argument("--out", required=True)
    bun.add_argument("--runtime", choices=("torch", "onnxruntime", "llamacpp", "tensorrt"))
    bun.add_argument("--role", choices=("teacher", "student", "model"))
    bun.add_argument("--label")
    rep = sub.add_parser("report", help="Markdown + PNG report from result JSON files/dirs")
    rep.add_argument("results", nargs="+", help="result JSON files or dirs holding them")
    rep.add_argument("--out", required=True)
    from genrecal.benchmarks.quality import add_arguments as quality_arguments

    quality_arguments(sub.add_parser("quality", help="GenRecal vs SFT vs ULD at an equal budget on easy-vqa"))
    from genrecal.benchmarks.distill_scale import add_arguments as scale_arguments

    scale_arguments(sub.add_parser("distill-scale", help="GenRecal vs SFT step time and memory at real shapes"))
    from genrecal.benchmarks.quality_scenes import add_arguments as scenes_arguments

    scenes_arguments(sub.add_parser("quality-scenes", help="distillation methods on multi-object scenes, 2 regimes"))
    _peers_arguments(sub.add_parser("peers", help="genrecal's ONNX/GGUF vs the peers' own exporters, one run"))
    return parser


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _peers_arguments(p: argparse.ArgumentParser) -> None:
    from genrecal.benchmarks.peers import KNOWN_PAIRS, PAIRS

    p.add_argument("--work", required=True, help="folder for the student, text model and artifacts (reused)")
    p.add_argument("--student", help="smolvlm/idefics3 student dir (default: zoo smolvlm --size into WORK/student)")
    p.add_argument("--size", default="small-smollm2", help="zoo size when building the student")
    p.add_argument("--threads", type=_int_list, default=(1, 2), help="thread counts, e.g. 1,2 (default)")
    p.add_argument("--repeats", type=int, default=3, help="round-robin passes per thread count (default 3)")
    p.add_argument("--prompt-tokens", type=int, default=64, dest="prompt_tokens")
    p.add_argument("--decode-tokens", type=int, default=64, dest="decode_tokens")
    p.add_argument("--agreement-tokens", type=int, default=256, dest="agreement_tokens")
    p.add_argument("--pairs", type=lambda s: tuple(s.split(",")), default=PAIRS,
                   help=f"comma-separated, of {', '.join(KNOWN_PAIRS)} (default {','.join(PAIRS)})")
    p.add_argument("--no-torch", action="store_false", dest="torch_reference",
                   help="do not time PyTorch (agreement still uses it)")
    p.add_argument("--profile", action="store_true", help="then onnxruntime's profiler on every ONNX artifact")
    p.add_argument("--json", help="write the record here")
    p.add_argument("--md", help="write the Markdown tables here")


def run_latency(args) -> int:
    from genrecal.benchmarks.latency import LatencyConfig, format_latency, run_latency
    from genrecal.benchmarks.results import write_json

    keys = ("artifact", "runtime", "threads", "device", "dtype", "profile", "warmup", "runs", "max_new_tokens",
            "image", "prompt", "role", "label", "measure_bandwidth")
    result = run_latency(LatencyConfig(**{k: getattr(args, k) for k in keys}))
    print(format_latency(result))
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    return 0


def run_accuracy(args) -> int:
    from genrecal.benchmarks.accuracy import AccuracyConfig, format_accuracy, run_accuracy
    from genrecal.benchmarks.results import write_json

    keys = ("artifact", "data", "limit", "seed", "runtime", "threads", "device", "dtype", "profile", "max_new_tokens",
            "role", "label")
    result = run_accuracy(AccuracyConfig(**{k: getattr(args, k) for k in keys}))
    print(format_accuracy(result))
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    return 0


def run_bundle(args) -> int:
    from genrecal.benchmarks.bundle import make_bundle

    out = make_bundle(args.artifact, args.profile, args.out, args.runtime, args.role, args.label)
    print(f"wrote {out}\non the device: cd {out.name} && ./run.sh setup && ./run.sh\n"
          f"then: genrecal-bench report {out.name}/results ... --out report")
    return 0


def run_report(args) -> int:
    from genrecal.benchmarks.report import write_report

    print(f"wrote {write_report(args.results, args.out)}")
    return 0


def run_quality(args) -> int:
    from genrecal.benchmarks.quality import run_from_args

    return run_from_args(args)


def run_quality_scenes(args) -> int:
    from genrecal.benchmarks.quality_scenes import run_from_args

    return run_from_args(args)


def run_distill_scale(args) -> int:
    from genrecal.benchmarks.distill_scale import run_from_args

    return run_from_args(args)


def run_peers(args) -> int:
    from genrecal.benchmarks.peers import PeersConfig, format_markdown, run_peers
    from genrecal.benchmarks.results import write_json

    keys = ("work", "student", "size", "threads", "repeats", "prompt_tokens", "decode_tokens", "agreement_tokens",
            "pairs", "torch_reference", "profile")
    record = run_peers(PeersConfig(**{k: getattr(args, k) for k in keys}))
    text = format_markdown(record)
    print(text)
    if args.json:
        print(f"wrote {write_json(record, args.json)}")
    if args.md:
        Path(args.md).write_text(text)
        print(f"wrote {args.md}")
    return 0


COMMANDS = {"latency": run_latency, "accuracy": run_accuracy, "bundle": run_bundle, "report": run_report,
            "quality": run_quality,
            "quality-scenes": run_quality_scenes, "distill-scale": run_distill_scale, "peers": run_peers}


def main(argv: list[str] | None = None) -> int:
    """Entry point used by `genrecal-bench` (genrecal.cli wraps it: user errors print one line)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":  # `python -m genrecal.benchmarks.cli` (the bundle's run.sh)
    from genrecal.cli import bench_main

    sys.exit(bench_main())
