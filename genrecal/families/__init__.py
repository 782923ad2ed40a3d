"""Families registry, keyed by transformers' `config.model_type`.

Adding a family = one file exposing `FAMILY` and one line in `_MODULES`.
"""
from __future__ import annotations

import importlib

from genrecal.families.base import Family, UnsupportedFamilyError

_MODULES = {
    "llava": "genrecal.families.llava",
    "qwen2_vl": "genrecal.families.qwen2_vl",
    "qwen2_5_vl": "genrecal.families.qwen2_5_vl",
    "idefics3": "genrecal.families.idefics3",
    "smolvlm": "genrecal.families.smolvlm",
    "internvl": "genrecal.families.internvl",
    "gemma3": "genrecal.families.gemma3",
}


def _load(name: str) -> Family:
    return importlib.import_module(_MODULES[name]).FAMILY


def names() -> list[str]:
    return sorted(_MODULES)


def student_names() -> list[str]:
    return [n for n in names() if _load(n).student]


def get_family(model_type: str, role: str = "student") -> Family | None:
    """The registered family for a model_type.

    role="student" (and "zoo"/"export") refuses unknown families with the supported list;
    role="teacher" returns None for an unknown family, which then runs through the generic path.
    """
    if model_type in _MODULES:
        fam = _load(model_type)
        if role == "student" and not fam.student:
            raise UnsupportedFamilyError(
                f"{model_type!r} can serve only as a teacher; supported student families: "
                + ", ".join(student_names())
            )
        return fam
    if role == "teacher":
        return None
    raise UnsupportedFamilyError(
        f"unsupported {role} family {model_type!r}; supported: {', '.join(student_names() if role == 'student' else names())}"
    )


def family_of(model_or_config, role: str = "student") -> Family | None:
    config = getattr(model_or_config, "config", model_or_config)
    return get_family(config.model_type, role)


__all__ = ["Family", "UnsupportedFamilyError", "get_family", "family_of", "names", "student_names"]
