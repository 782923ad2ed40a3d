"""`genrecal-demo` (also `genrecal demo`): open the teacher-vs-student page in a browser.

    genrecal-demo                                  # the quickstart's genrecal-out/teacher + student-genrecal
    genrecal-demo --teacher T --student S [--runtime R] [--host 127.0.0.1] [--port 7860] [--share]
    genrecal-demo --student genrecal-out/export    # offer every exported artifact of the student
    genrecal-demo --teacher T --student S --device cuda --dtype bf16   # torch-run models on the GPU

Binds 127.0.0.1 unless --host says otherwise; --share also asks Gradio for a public link.
"""
from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from genrecal.errors import GenrecalError

DEFAULT_OUT = Path("genrecal-out")
DEFAULT_TEACHER = DEFAULT_OUT / "teacher"
DEFAULT_STUDENT = DEFAULT_OUT / "student-genrecal"


class DemoError(GenrecalError):
    """Start-up problems: missing model dirs, a busy port."""


def build_parser() -> argparse.ArgumentParser:
    from genrecal import runtimes
    from genrecal.runtimes.torch_device import DEVICES, DTYPES

    p = argparse.ArgumentParser(prog="genrecal-demo", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help=f"teacher model dir (default: {DEFAULT_TEACHER})")
    p.add_argument("--student", help=f"student model dir, export artifact or export root (default: {DEFAULT_STUDENT})")
    p.add_argument("--runtime", choices=tuple(runtimes.BACKENDS),
                   help="runtime for the --student artifact (default: the one its format needs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also create a public *.gradio.live link")
    p.add_argument("--threads", type=int, help="CPU threads per model (default: the runtime's own)")
    p.add_argument("--device", choices=DEVICES, help="torch-run models (teacher, HF student): where to compute "
                   "(default auto: CUDA if present)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="torch-run models: compute dtype (default auto: the "
                   "checkpoint's on CUDA, fp32 on CPU)")
    p.add_argument("--max-new-tokens", type=int, default=32, dest="max_new_tokens", help="answer length cap")
    return p


def resolve_paths(teacher: str | None, student: str | None) -> tuple[Path, Path]:
    """The two model paths; the quickstart's outputs when none are given, with a one-line hint if missing."""
    if teacher is None and student is None:
        missing = [p for p in (DEFAULT_TEACHER, DEFAULT_STUDENT) if not p.exists()]
        if missing:
            raise DemoError(f"no quickstart outputs at {', '.join(map(str, missing))}: create them with "
                            f"`genrecal quickstart --out {DEFAULT_OUT}`, or pass --teacher and --student")
    t, s = Path(teacher or DEFAULT_TEACHER), Path(student or DEFAULT_STUDENT)
    for flag, given, path in (("--teacher", teacher, t), ("--student", student, s)):
        if not path.exists():
            hint = "" if given else f" (run `genrecal quickstart --out {DEFAULT_OUT}` to create it)"
            raise DemoError(f"{flag} {path}: not found{hint}")
    return t, s


def _validate(args) -> None:
    if not 1 <= args.port <= 65535:
        raise DemoError(f"--port must be in 1..65535, got {args.port}")
    if not 1 <= args.max_new_tokens <= 512:
        raise DemoError(f"--max-new-tokens must be in 1..512, got {args.max_new_tokens}")
    if args.threads is not None and args.threads < 1:
        raise DemoError(f"--threads must be >= 1, got {args.threads}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # `kill` stops the demo like Ctrl+C: the server closes, temp files go


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _validate(args)
    teacher, student = resolve_paths(args.teacher, args.student)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline demo
    from genrecal.demo.app import build_app, launch_options
    from genrecal.demo.models import Models

    print(f"loading teacher {teacher} and student {student} ...", flush=True)
    models = Models.open(teacher, student, runtime=args.runtime, threads=args.threads, device=args.device,
                         dtype=args.dtype)
    app = build_app(models, max_new_tokens=args.max_new_tokens)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: the demo is reachable from other machines", flush=True)
    try:
        _, local_url, share_url = app.launch(**launch_options(args.host, args.port, args.share),
                                             prevent_thread_lock=True)
    except OSError as exc:  # Gradio's "Cannot find empty port" and bind failures
        raise DemoError(f"cannot serve on {args.host}:{args.port} ({exc}); pass another --port") from None
    print(f"genrecal demo on {local_url}" + (f" and {share_url}" if share_url else "") + " (Ctrl+C stops it)",
          flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    app.block_thread()
    return 0
