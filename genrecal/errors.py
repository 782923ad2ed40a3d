"""Errors that mean "the user gave something that cannot work": the CLI prints them as one line.

New user-facing errors subclass `GenrecalError`. This module imports nothing heavy, so a device
bundle (runtimes only) can use it without torch or transformers.
"""
from __future__ import annotations

import sys
from typing import Callable


class GenrecalError(Exception):
    """Base for every user-facing error: data, config, model loading, families, export, runtimes, benchmarks."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Every error class the CLI reports as one `error:` line."""
    return (GenrecalError, FileNotFoundError, FileExistsError, NotADirectoryError)


def one_line(func: Callable[..., int], *args) -> int:
    """Run a command; a user error prints as one `error:` line (exit 2), Ctrl-C as `interrupted` (130)."""
    try:
        return func(*args)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
