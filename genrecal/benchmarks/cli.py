"""`genrecal-bench`: latency, accuracy, on-device bundles and reports.

    genrecal-bench latency  --artifact PATH [--runtime R] [--threads N] [--profile P] [--warmup K]
                            [--runs N] [--device auto|cpu|cuda] [--dtype auto|fp32|bf16|fp16] [--json FILE]
    genrecal-bench accuracy --artifact PATH --data easy-vqa|FILE [--limit N] [--device D] [--dtype T] [--json FILE]
    genrecal-bench bundle   --artifact PATH --profile P --out DIR
    genrecal-bench report   RESULTS... --out DIR

PATH is an HF model dir (torch) or one `genrecal-export` output dir (runtime from its manifest). Installed
packages add subcommands through the `genrecal.bench_commands` entry point: genrecal's research harnesses
(quality, quality-scenes, distill-scale, peers, gguf-writers: the package's experiments/ folder) come in
that way, so this module never imports them.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from genrecal.artifacts.profiles import PROFILES
from genrecal.benchmarks.accuracy import AccuracyConfig
from genrecal.benchmarks.latency import ROLES, LatencyConfig
from genrecal.config_cli import add_flags, from_args

PLUGIN_GROUP = "genrecal.bench_commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrecal-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency", help="warm-up + N timed runs: median/p90 per phase, %% of bandwidth bound")
    add_flags(lat, LatencyConfig)
    lat.add_argument("--json", help="write the result record to this file")
    acc = sub.add_parser("accuracy", help="exact match + VQA soft accuracy of the artifact")
    add_flags(acc, AccuracyConfig)
    acc.add_argument("--json", help="write the result record to this file")
    bun = sub.add_parser("bundle", help="self-contained folder to run on a device")
    bun.add_argument("--artifact", required=True)
    bun.add_argument("--profile", required=True, help=", ".join(PROFILES))
    bun.add_argument("--out", required=True)
    bun.add_argument("--runtime", choices=("torch", "onnxruntime", "llamacpp", "tensorrt"))
    bun.add_argument("--role", choices=ROLES)
    bun.add_argument("--label")
    rep = sub.add_parser("report", help="Markdown + PNG report from result JSON files/dirs")
    rep.add_argument("results", nargs="+", help="result JSON files or dirs holding them")
    rep.add_argument("--out", required=True)
    for name, parsed in (("latency", lat), ("accuracy", acc), ("bundle", bun), ("report", rep)):
        parsed.set_defaults(func=COMMANDS[name])
    _add_plugins(sub)
    return parser


def _add_plugins(sub) -> None:
    """The subcommands of every `genrecal.bench_commands` entry point: each names a `register(subparsers)`
    that adds its subparsers, each with `set_defaults(func=...)`. One that cannot be imported is left out."""
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            register = plugin.load()
        except ImportError:  # e.g. a device bundle that ships the runtimes only
            continue
        register(sub)


def run_latency(args) -> int:
    from genrecal.benchmarks.latency import format_latency, run_latency
    from genrecal.benchmarks.results import write_json

    result = run_latency(from_args(LatencyConfig, args))
    print(format_latency(result))
    if args.json:
        print(f"wrote {write_json(result, args.json)}")
    return 0


def run_accuracy(args) -> int:
    from genrecal.benchmarks.accuracy import format_accuracy, run_accuracy
    from genrecal.benchmarks.results import write_json

    result = run_accuracy(from_args(AccuracyConfig, args))
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


COMMANDS = {"latency": run_latency, "accuracy": run_accuracy, "bundle": run_bundle, "report": run_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point used by `genrecal-bench` (genrecal.cli wraps it: user errors print one line)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)


if __name__ == "__main__":  # `python -m genrecal.benchmarks.cli` (the bundle's run.sh: no genrecal.cli there)
    from genrecal.errors import one_line

    sys.exit(one_line(main))
