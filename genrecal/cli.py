"""Command line: `genrecal <command>` and the `genrecal-<command>` shortcuts.

Every command maps to one function; known user errors print one `error:` line (no traceback) and
exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from genrecal.errors import user_errors


DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", help="teacher model dir or hub id (any image-text-to-text model)")
    p.add_argument("--student", help="student model dir or hub id (a registered family)")
    p.add_argument("--data", help="JSON/JSONL, a dir with data.json, or a HF dataset dir (LLaVA, HF chat, TRL "
                   "prompt-completion or SmolVLM texts records)")
    p.add_argument("--out", help="output dir")
    p.add_argument("--method", choices=("genrecal", "sft", "kd", "uld"))
    p.add_argument("--stages", type=_csv, help="comma list of align,distill,sft (genrecal only)")
    p.add_argument("--max-steps", type=int, dest="max_steps")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--grad-accum", type=int, dest="grad_accum")
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr", type=float, dest="min_lr")
    p.add_argument("--seed", type=int)
    p.add_argument("--limit", type=int, help="use only the first N samples")
    p.add_argument("--max-length", type=int, dest="max_length",
                   help="longest sample in tokens, either model (default: one largest image + 1024 text tokens)")
    p.add_argument("--image-root", dest="image_root",
                   help="image paths resolve under this dir (default: the data file's dir); symlinks inside allowed")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="frozen teacher + compute precision (default auto: the "
                   "launch config's, else the teacher checkpoint's); trainable weights stay fp32")
    p.add_argument("--save-dtype", choices=DTYPE_CHOICES, dest="save_dtype",
                   help="dtype of the saved student (default auto: the input student checkpoint's)")
    p.add_argument("--teacher-device-map", dest="teacher_device_map",
                   help="spread the teacher over the GPUs with this transformers device_map (e.g. auto); one process")
    p.add_argument("--gradient-checkpointing", choices=("auto", "on", "off"), dest="gradient_checkpointing",
                   help="recompute student activations in backward (default auto: on when on a GPU)")
    p.add_argument("--attn-mass-every", type=int, dest="attn_mass_every",
                   help="compute the diagnostics (attention mass, shuffled-question rise of L_ar) every N steps "
                   "(default 10)")
    p.add_argument("--recal-answer-input", choices=("hidden", "embedding"), dest="recal_answer_input",
                   help="what the Recalibrator reads at the teacher's answer positions: its last-layer hidden states "
                   "(default, the paper) or its answer-token input embeddings")
    p.add_argument("--data-workers", type=int, dest="data_workers",
                   help="processes rendering the next micro-batches while the model trains (default 0)")
    p.add_argument("--stop-after", dest="stop_after",
                   help="end this launch after this stage; go on with --resume (FSDP/DeepSpeed: one per launch)")
    p.add_argument("--checkpoint-every", type=int, dest="checkpoint_every")
    p.add_argument("--config", help="YAML file with DistillConfig fields (CLI flags override it)")
    p.add_argument("--resume", action="store_true", default=None, help="continue from OUT/checkpoints/latest")
    p.add_argument("--dry-run", action="store_true", default=None, dest="dry_run",
                   help="print what each model sees for the first sample, and a memory estimate; train nothing")
    p.add_argument("--on-bad-sample", choices=("error", "skip"), dest="on_bad_sample")
    p.add_argument("--require-image", action="store_true", default=None, dest="require_image",
                   help="refuse text-only samples (no_image) instead of training on them")
    p.add_argument("--trust-remote-code", action="store_true", default=None, dest="trust_remote_code")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_distill(args) -> int:
    from genrecal.distill.config import load_config

    keys = ("teacher", "student", "data", "out", "method", "stages", "max_steps", "batch_size", "grad_accum", "lr",
            "min_lr", "seed", "limit", "max_length", "checkpoint_every", "resume", "dry_run", "on_bad_sample",
            "trust_remote_code", "require_image", "image_root", "dtype", "save_dtype", "teacher_device_map",
            "gradient_checkpointing", "attn_mass_every", "stop_after", "data_workers", "recal_answer_input")
    cfg = load_config(args.config, {k: getattr(args, k) for k in keys})
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
    p.add_argument("--teacher", required=True, help="teacher model dir or hub id (any image-text-to-text model)")
    p.add_argument("--data", required=True, help="prompts: JSON/JSONL, a dir with data.json, or a HF dataset dir "
                   "(any layout genrecal-distill reads; a record's final answer, if any, is answered anew)")
    p.add_argument("--out", required=True, help="output dir: data.json (LLaVA JSON + the teacher's token ids), "
                   "images/, parts/, manifest.json; the same command again resumes it")
    p.add_argument("--batch-size", type=int, default=8, dest="batch_size", help="prompts per generate call")
    p.add_argument("--max-new-tokens", type=int, default=256, dest="max_new_tokens", help="longest answer in tokens")
    p.add_argument("--max-length", type=int, dest="max_length", help="longest prompt in tokens")
    p.add_argument("--limit", type=int, help="answer only the first N prompts")
    p.add_argument("--image-root", dest="image_root", help="image paths resolve under this dir")
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error", dest="on_bad_sample")
    p.add_argument("--require-image", action="store_true", dest="require_image")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="the teacher's weights")
    p.add_argument("--trust-remote-code", action="store_true", dest="trust_remote_code")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_teacher_answers(args) -> int:
    from genrecal.distill.generate_answers import AnswerConfig, teacher_answers

    keys = ("teacher", "data", "out", "batch_size", "max_new_tokens", "max_length", "limit", "image_root",
            "on_bad_sample", "require_image", "dtype", "trust_remote_code")
    path = teacher_answers(AnswerConfig(**{k: getattr(args, k) for k in keys}), progress=not args.no_progress)
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
    try:
        return func(args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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


def _lazy_main(module: str, argv):
    import importlib

    mod = importlib.import_module(module)
    return _run(lambda a: mod.main(a), sys.argv[1:] if argv is None else argv)


def export_main(argv: list[str] | None = None) -> int:
    return _lazy_main("genrecal.export.cli", argv)


def bench_main(argv: list[str] | None = None) -> int:
    return _lazy_main("genrecal.benchmarks.cli", argv)


def demo_main(argv: list[str] | None = None) -> int:
    return _lazy_main("genrecal.demo.cli", argv)


if __name__ == "__main__":
    sys.exit(main())
