"""Errors that mean "the user gave something that cannot work": the CLI prints them as one line.

New user-facing errors subclass `GenrecalError`; the leaf packages' own errors are listed here.
"""
from __future__ import annotations


class GenrecalError(Exception):
    """Base for user-facing errors raised by export, runtimes, benchmarks and the demo."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from genrecal.data.errors import DataError
    from genrecal.distill.config import ConfigError
    from genrecal.distill.models import ModelLoadError
    from genrecal.families.base import UnsupportedFamilyError

    return (GenrecalError, DataError, ConfigError, ModelLoadError, UnsupportedFamilyError, FileNotFoundError,
            FileExistsError, NotADirectoryError)


USER_ERRORS = _user_errors()
