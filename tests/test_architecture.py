"""The house rules of docs/architecture.md, asserted: import directions, zero import cycles, and the
artifact contract free of torch.

    python -m pytest tests/test_architecture.py -q

Every import statement of every module is read with `ast` (module level and inside functions, relative
imports resolved), plus string constants that name a module (what `importlib.import_module` takes).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import genrecal
from genrecal.benchmarks.bundle_files import module_imports

PACKAGE = Path(genrecal.__file__).resolve().parent


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every genrecal module `path` (a file under `package`) imports or names as a string, absolute names
    (the same reader the device bundles use to find what they ship)."""
    return module_imports(path, _module_name(path, package))


def _offending(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((PACKAGE / package).rglob("*.py")):
        hits = sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            bad[str(path.relative_to(PACKAGE.parent))] = hits
    return bad


MODULES = {_module_name(p, PACKAGE): p for p in sorted(PACKAGE.rglob("*.py"))}


def _real(name: str) -> str | None:
    """The module a dotted name lives in (`genrecal.families.register` -> `genrecal.families`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the genrecal modules it imports. An edge to one of the module's own parent packages is left
    out: Python runs a parent's __init__ before any child, so that edge exists for every module anyway."""
    graph = {}
    for module, path in MODULES.items():
        parents = {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
        graph[module] = {m for n in imported_modules(path) if (m := _real(n)) and m != module and m not in parents}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _violations(package: str, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """Modules of `package` importing a genrecal module outside `allowed` (each a module or package)."""
    graph, bad = import_graph(), {}
    for module, deps in graph.items():
        if module == package or module.startswith(package + "."):
            hits = sorted(d for d in deps if not any(d == a or d.startswith(a + ".") for a in (package, *allowed)))
            if hits:
                bad[module] = hits
    return bad


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_families_data_and_artifacts_are_leaves():
    base = ("genrecal.errors", "genrecal.images", "genrecal.user_text", "genrecal.fsutil")
    assert _violations("genrecal.artifacts", base) == {}
    assert _violations("genrecal.families", (*base, "genrecal.artifacts")) == {}
    assert _violations("genrecal.data", base) == {}


def test_runtimes_import_only_the_contract_images_and_errors():
    assert _violations("genrecal.runtimes", ("genrecal.artifacts", "genrecal.images", "genrecal.user_text",
                                             "genrecal.errors")) == {}


def test_runtimes_import_no_export_distill_or_benchmarks():
    forbidden = ("genrecal.export", "genrecal.distill", "genrecal.benchmarks", "genrecal.families")
    assert _offending("runtimes", forbidden) == {}


def test_export_never_imports_distill_benchmarks_or_experiments():
    assert _offending("export", ("genrecal.distill", "genrecal.benchmarks", "genrecal.experiments")) == {}


def test_distill_knows_nothing_of_deployment():
    assert _offending("distill", ("genrecal.export", "genrecal.runtimes", "genrecal.benchmarks",
                                  "genrecal.experiments")) == {}


def test_nothing_imports_the_experiments():
    graph = import_graph()
    users = {m: sorted(d for d in deps if d.startswith("genrecal.experiments")) for m, deps in graph.items()
             if not m.startswith("genrecal.experiments")}
    assert {m: d for m, d in users.items() if d} == {}


def test_the_artifact_contract_needs_no_torch_or_transformers():
    heavy = ("torch", "transformers", "torchvision", "accelerate")
    bad = {}
    for path in sorted((PACKAGE / "artifacts").rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
        if hit := sorted(names & set(heavy)):
            bad[path.name] = hit
    assert bad == {}


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
