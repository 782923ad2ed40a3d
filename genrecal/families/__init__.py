"""Families registry, keyed by transformers' `config.model_type`.

Each family is one module, genrecal/families/<model_type>.py, that ends with
``FAMILY = register(Family(...))``; the registry finds the modules by name, so adding a family is that
one file plus its tests (docs/architecture.md, "Adding a family"). Modules whose names end in
``_parts`` / ``base`` / ``model_access`` hold the pieces families share and are no families.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from genrecal.families.base import ClientFacts, Family, TokenizerSpec
from genrecal.families.model_access import UnsupportedFamilyError

_SHARED = {"base", "model_access"}
_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Record `family` (call it where the family is defined); its module must be named family.name."""
    if family.name in _REGISTERED and _REGISTERED[family.name] is not family:
        raise ValueError(f"family {family.name!r} registered twice")
    _REGISTERED[family.name] = family
    return family


def _module_names() -> list[str]:
    here = [Path(__file__).parent.as_posix()]
    return sorted(m.name for m in pkgutil.iter_modules(here)
                  if m.name not in _SHARED and not m.name.endswith("_parts"))


def _load(name: str) -> Family:
    if name not in _REGISTERED:
        importlib.import_module(f"{__name__}.{name}")
        if name not in _REGISTERED:
            raise UnsupportedFamilyError(f"genrecal/families/{name}.py registers no family named {name!r}")
    return _REGISTERED[name]


def names() -> list[str]:
    return _module_names()


def student_names() -> list[str]:
    return [n for n in names() if _load(n).student]


def with_format(fmt: str) -> list[str]:
    """Families that declare export format `fmt` ("onnx" | "gguf")."""
    return [n for n in names() if fmt in _load(n).formats]


def onnx_spec(model_type: str):
    """The family's OnnxSpec, or UnsupportedFamilyError naming the families that declare one."""
    family = get_family(model_type, role="teacher")  # None for a family genrecal has no module for
    if family is None or family.onnx is None:
        raise UnsupportedFamilyError(f"no ONNX export for family {model_type!r}; families with an ONNX wrapper: "
                                     f"{', '.join(with_format('onnx'))}")
    return family.onnx


def get_family(model_type: str, role: str = "student") -> Family | None:
    """The registered family for a model_type.

    role="student" (and "zoo"/"export") refuses unknown families with the supported list;
    role="teacher" returns None for an unknown family, which then runs through the generic path.
    """
    if model_type in _module_names():
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


__all__ = ["ClientFacts", "Family", "TokenizerSpec", "UnsupportedFamilyError", "family_of", "get_family", "names",
           "onnx_spec", "register", "student_names", "with_format"]
