"""Import directions (docs/style.md): a device runs artifacts without export, training or benchmark code.

    python -m pytest tests/runtimes/test_runtime_imports.py -q

Every import statement of every module is read with `ast` (module level and inside functions, relative
imports resolved), plus string constants that name a module (what `importlib.import_module` takes).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import genrecal

PACKAGE = Path(genrecal.__file__).resolve().parent
MODULE_NAME = re.compile(r"genrecal(\.\w+)+")


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + int(is_package)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every genrecal module `path` (a file under `package`) imports or names as a string, absolute names."""
    module, is_package = _module_name(path, package), path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from genrecal import export`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_NAME.fullmatch(node.value):
            found.add(node.value)
    return {name for name in found if name == "genrecal" or name.startswith("genrecal.")}


def _offending(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        hits = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(PACKAGE.parent))] = hits
    return bad


def test_runtimes_import_no_export_distill_or_benchmarks():
    forbidden = ("genrecal.export", "genrecal.distill", "genrecal.benchmarks")
    assert _offending("runtimes", forbidden) == {}


def test_the_shared_gguf_pair_package_is_a_leaf():
    forbidden = ("genrecal.export", "genrecal.runtimes", "genrecal.distill", "genrecal.benchmarks",
                 "genrecal.demo", "genrecal.data")
    assert _offending("gguf_pair", forbidden) == {}


@pytest.mark.parametrize("source,expected", [
    ("from genrecal.export.gguf import layout", {"genrecal.export.gguf", "genrecal.export.gguf.layout"}),
    ("import genrecal.distill.trainer as t", {"genrecal.distill.trainer"}),
    ("from genrecal import benchmarks", {"genrecal", "genrecal.benchmarks"}),
    ("from ..export import run", {"genrecal.export", "genrecal.export.run"}),
    ("def f():\n    from genrecal.export.gguf.prompt import PromptFormat", {"genrecal.export.gguf.prompt",
                                                                          "genrecal.export.gguf.prompt.PromptFormat"}),
    ("importlib.import_module('genrecal.export.gguf')", {"genrecal.export.gguf"}),
    ('"""A GGUF export dir (see genrecal.export.gguf)."""', set()),  # prose naming a module is no import
])
def test_the_import_reader_sees_every_form(source, expected, tmp_path):
    """The checker itself: each way of importing is caught, so an empty result above means something."""
    path = tmp_path / "genrecal" / "runtimes" / "probe.py"
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    assert imported_modules(path, tmp_path / "genrecal") == expected
