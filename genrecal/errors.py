"""Errors that mean "the user gave something that cannot work": the CLI prints them as one line.

New user-facing errors subclass `GenrecalError`. This module imports nothing heavy, so a device
bundle (runtimes only) can use it without torch or transformers.
"""
from __future__ import annotations


class GenrecalError(Exception):
    """Base for user-facing errors raised by export, runtimes, benchmarks and the demo."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Every error class the CLI reports as one `error:` line (imports the leaf packages lazily)."""
    from genrecal.data.errors import DataError
    from genrecal.distill.config import ConfigError
    from genrecal.distill.models import ModelLoadError
    from genrecal.families.base import UnsupportedFamilyError

    return (GenrecalError, DataError, ConfigError, ModelLoadError, UnsupportedFamilyError, FileNotFoundError,
            FileExistsError, NotADirectoryError)
