"""`genrecal-experiments`: the research harnesses' subcommands (the same ones `genrecal-bench` offers).

    genrecal-experiments quality        [--quick] [--seeds 0,1,2] [--out DIR]   (trains models; quality.py)
    genrecal-experiments quality-scenes [--quick] [--methods M,...] [--regimes R,...] [--jobs N] [--out DIR]
                                        (multi-object scenes, gold vs teacher answers, TRL GOLD beside)
    genrecal-experiments quality-v4     [--quick] [--stage gate|all] [--set FIELD=VALUE] [--out DIR]
                                        (a KD-vs-SFT gate first, then methods in budgets B1/B2)
    genrecal-experiments distill-scale  --work DIR [--batch-sizes 1,4]  (2B-shaped bf16 teacher)
    genrecal-experiments peers          --work DIR [--threads 1,2] [--repeats N] [--pairs P,...] [--json FILE]
                                        (genrecal's exports vs onnxruntime-genai's builder / llama.cpp's converter)
    genrecal-experiments gguf-writers   --work DIR [--size S] [--precision f16] [--json FILE]
                                        (genrecal's GGUF writer vs llama.cpp's converter, file by file)

`genrecal-bench` gets them from `register`, named by the `genrecal.bench_commands` entry point in
pyproject.toml, so `genrecal-bench quality-scenes ...` keeps working while the core never imports this
package.
"""
from __future__ import annotations

import argparse
import sys

from genrecal.experiments import distill_scale, gguf_writers, peers, quality, quality_scenes, quality_v4

COMMANDS = {  # subcommand -> (module with add_arguments(parser) and run_from_args(args), one-line help)
    "quality": (quality, "GenRecal vs SFT vs ULD at an equal budget on easy-vqa"),
    "distill-scale": (distill_scale, "GenRecal vs SFT step time and memory at real shapes"),
    "quality-scenes": (quality_scenes, "distillation methods on multi-object scenes, 2 regimes"),
    "quality-v4": (quality_v4, "positive control (KD vs SFT gate), then methods in budgets B1/B2, prior beside"),
    "peers": (peers, "genrecal's ONNX/GGUF vs the peers' own exporters, one run"),
    "gguf-writers": (gguf_writers, "genrecal's GGUF writer vs llama.cpp's converter: tensors, keys, logits"),
}


def register(sub) -> None:
    """Add every experiment's subparser to `sub` (argparse subparsers), each with `func` = its runner.
    The `genrecal.bench_commands` entry point: genrecal-bench calls it while building its parser."""
    for name, (module, help_text) in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text)
        module.add_arguments(parser)
        parser.set_defaults(func=module.run_from_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrecal-experiments", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)


def console_main(argv: list[str] | None = None) -> int:
    """`genrecal-experiments`: main() with genrecal's CLI error handling (a user error is one line, exit 2)."""
    from genrecal.cli import run_main

    return run_main(main, argv)
