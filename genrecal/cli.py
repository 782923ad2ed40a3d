"""Command line: `genrecal <command>` and the `genrecal-<command>` shortcuts.

Every command maps to one function; known user errors print one `error:` line (no traceback) and
exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from genrecal.config_cli import add_flags, from_args, given
from genrecal.errors import one_line


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """One flag per DistillConfig field (genrecal.config_cli); a flag not given leaves the YAML's value."""
    from genrecal.distill.config import DistillConfig

    p.add_argument("--config", help="YAML file with DistillConfig fields (CLI flags override it)")
    add_flags(p, DistillConfig, defaults=False)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_distill(args) -> int:
    from genrecal.distill.config import DistillConfig, load_config

    cfg = load_config(args.config, given(DistillConfig, args))
    for name in ("student", "data", "out"):
        if not getattr(cfg, name) and not (cfg.dry_run and name == "out"):
            raise _usage(f"--{name} is required")
    if cfg.dry_run:
        from genrecal.distill.doctor import doctor

        print(doctor(cfg))
        return 0
    from genrecal.distill.trainer import train

    out = train(cfg, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":
        return 0
    if cfg.stop_after and cfg.stop_after != cfg.stage_names()[-1]:
        print(f"stopped after stage {cfg.stop_after}: continue with --resume\nlog: {out / 'train_log.jsonl'}")
    else:
        print(f"student: {out / 'student'}\nlog: {out / 'train_log.jsonl'}")
    return 0


def _usage(msg: str):
    from genrecal.distill.config import ConfigError

    return ConfigError(msg)


def run_zoo(args) -> int:
    from genrecal import families, zoo

    if args.zoo_cmd == "list":
        for name in families.names():
            fam = families.get_family(name, role="zoo")
            role = "teacher+student" if fam.student else "teacher only"
            print(f"{name:12s} {fam.model_class:40s} sizes={','.join(fam.sizes)} {role}")
        return 0
    out = zoo.build_to_dir(args.family, args.out, args.size, args.seed)
    print(f"wrote {args.family}/{args.size} to {out}")
    return 0


def run_data(args) -> int:
    if args.data_cmd == "teacher-answers":
        return run_teacher_answers(args)
    from genrecal.data import write_easy_vqa

    path = write_easy_vqa(args.out, split=args.split, limit=args.limit, seed=args.seed)
    print(f"wrote {path}")
    return 0


def add_teacher_answers_args(p: argparse.ArgumentParser) -> None:
    from genrecal.distill.config import AnswerConfig

    add_flags(p, AnswerConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_teacher_answers(args) -> int:
    from genrecal.distill.config import AnswerConfig
    from genrecal.distill.generate_answers import teacher_answers

    path = teacher_answers(from_args(AnswerConfig, args), progress=not args.no_progress)
    print(f"wrote {path}")
    return 0


def run_quickstart(args) -> int:
    from genrecal.quickstart import quickstart

    quickstart(args.out, fast=args.fast)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrecal", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("distill", help="GenRecal distillation (and sft/kd/uld baselines)")
    add_distill_args(d)
    d.set_defaults(func=run_distill)
    z = sub.add_parser("zoo", help="tiny real-architecture VLMs built offline")
    zsub = z.add_subparsers(dest="zoo_cmd", required=True)
    zsub.add_parser("list", help="registered families")
    zb = zsub.add_parser("build", help="build one tiny model dir")
    zb.add_argument("--family", required=True)
    zb.add_argument("--size", default="tiny")
    zb.add_argument("--out", required=True)
    zb.add_argument("--seed", type=int, default=0)
    z.set_defaults(func=run_zoo)
    da = sub.add_parser("data", help="datasets")
    dsub = da.add_subparsers(dest="data_cmd", required=True)
    ev = dsub.add_parser("easy-vqa", help="write easy-vqa as LLaVA JSON + images")
    ev.add_argument("--out", required=True)
    ev.add_argument("--split", choices=("train", "test"), default="train")
    ev.add_argument("--limit", type=int)
    ev.add_argument("--seed", type=int, default=0)
    add_teacher_answers_args(dsub.add_parser("teacher-answers", help="a teacher answers unlabelled prompts "
                                             "(LLaVA JSON + its token ids, resumable)"))
    da.set_defaults(func=run_data)
    q = sub.add_parser("quickstart", help="offline end-to-end demo on easy-vqa")
    q.add_argument("--out", default="genrecal-out")
    q.add_argument("--fast", action="store_true", help="a much shorter run (smoke test)")
    q.set_defaults(func=run_quickstart)
    for name in ("export", "bench", "demo"):
        extra = sub.add_parser(name, help=f"same as genrecal-{name}", add_help=False)
        extra.set_defaults(func=None, forward=name)
    return parser


def _quiet_transformers() -> None:
    """Our own progress bars say what runs; transformers' per-load bars are noise on a terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _run(func, args) -> int:
    _quiet_transformers()
    return one_line(func, args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("export", "bench", "demo"):
        return {"export": export_main, "bench": bench_main, "demo": demo_main}[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    return _run(args.func, args)


def distill_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="genrecal-distill", description="GenRecal distillation")
    add_distill_args(p)
    return _run(run_distill, p.parse_args(sys.argv[1:] if argv is None else argv))


def run_main(main_func, argv: list[str] | None = None) -> int:
    """`main_func(argv)` as a console script: user errors print one `error:` line and exit 2."""
    return _run(main_func, sys.argv[1:] if argv is None else argv)


def _lazy_main(module: str, argv):
    import importlib

    return run_main(importlib.import_module(module).main, argv)


def export_main(argv: list[str] | None = None) -> int:
    return _lazy_main("genrecal.export.cli", argv)


def bench_main(argv: list[str] | None = None) -> int:
    return _lazy_main("genrecal.benchmarks.cli", argv)


def demo_main(argv: list[str] | None = None) -> int:
    return _lazy_main("genrecal.demo.cli", argv)


if __name__ == "__main__":
    sys.exit(main())
