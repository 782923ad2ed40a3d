"""What a device bundle carries: the genrecal modules its commands import, and the pip requirements of the
one runtime it runs — not the package (no distillation, export, experiments, demo) and no torch unless the
runtime is torch.

    files = bundle_modules("onnxruntime")        # {relative path: absolute path} under genrecal/
    reqs = runtime_requirements("onnxruntime")   # what `run.sh setup` installs

The module set is the closure of genrecal imports (module level and inside functions, read with `ast`)
from the bundle's entry point (`python -m genrecal.benchmarks.cli latency|accuracy`), leaving out the other
runtimes' backends and the commands that do not run on a device (bundle, report).
"""
from __future__ import annotations

import ast
import re
import shutil
from importlib import metadata
from pathlib import Path

import genrecal

PACKAGE = Path(genrecal.__file__).resolve().parent
ENTRY = "genrecal." + "benchmarks.cli"  # spelled in two parts: a name to start from, not an import
# not shipped (names relative to the package, so the import-rule test does not read them as imports)
NOT_ON_DEVICE = tuple(f"genrecal.{name}" for name in (
    "benchmarks.bundle", "benchmarks.bundle_files", "benchmarks.report", "benchmarks.edgellm_bundle", "cli",
    "experiments", "distill", "export", "demo", "families", "zoo", "quickstart"))
_BACKENDS = {"torch": "genrecal.runtimes.torch_runtime", "onnxruntime": "genrecal.runtimes.onnxruntime",
             "llamacpp": "genrecal.runtimes.llamacpp", "tensorrt": "genrecal.runtimes.tensorrt"}
# what each runtime needs on the device beyond the Python standard library (versions: genrecal's own pins;
# onnxruntime: the version the artifact was checked with, when installed here)
ALL_BACKENDS = tuple(_BACKENDS.values())
_COMMON = ["numpy", "pillow", "psutil", "easy-vqa==1.0"]
_PROCESSOR = ["transformers==5.23.0", "tokenizers>=0.22", "jinja2"]  # processors + chat templates, torch-free
RUNTIME_REQUIREMENTS = {
    "onnxruntime": [*_COMMON, *_PROCESSOR, "onnxruntime"],
    "llamacpp": [*_COMMON, "jinja2", "gguf==0.19.0", "llama-cpp-python==0.3.36"],
    "torch": None,  # genrecal's own dependencies (torch, transformers, ...)
    "tensorrt": ["psutil", "# tensorrt + a CUDA build of torch come with JetPack: make the venv with "
                 "VENV_ARGS=--system-site-packages (run.sh does for this profile)"],
}
_PINNED_HERE = ("onnxruntime",)
_MODULE_NAME = re.compile(r"genrecal(\.\w+)+")  # a dotted genrecal name, nothing else (not prose)


def _module_path(name: str) -> Path | None:
    rel = Path(*name.split(".")[1:])
    for path in (PACKAGE / rel / "__init__.py", (PACKAGE / rel).with_suffix(".py")):
        if path.is_file():
            return path
    return None


def module_imports(path: Path, module: str) -> set[str]:
    """Every genrecal name the file `path` (module `module`) imports, module level or inside functions,
    relative imports resolved, plus string constants that are a dotted genrecal name (what
    `importlib.import_module` takes). Names may end in an attribute (`genrecal.families.register`).
    tests/test_architecture.py reads the import graph with this too."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level + int(is_package)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from genrecal import export`
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.fullmatch(node.value):
            found.add(node.value)
    return {n for n in found if n == "genrecal" or n.startswith("genrecal.")}


def module_closure(entries: list[str], skip: tuple[str, ...]) -> dict[str, Path]:
    """{path relative to the package's parent: file} of the `entries` and every genrecal module they import
    (transitively, parent packages' __init__.py included), leaving out modules under any name in `skip`."""
    todo, seen = list(entries), {}
    while todo:
        name = todo.pop()
        while name and _module_path(name) is None:  # `genrecal.x.y.Name` -> module genrecal.x.y
            name = name.rpartition(".")[0]
        if not name or name in seen or any(name == s or name.startswith(s + ".") for s in skip):
            continue
        seen[name] = _module_path(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(1, len(parts)))  # parent packages
        todo.extend(module_imports(seen[name], name))
    return {p.relative_to(PACKAGE.parent).as_posix(): p for p in seen.values()}


def bundle_modules(runtime: str) -> dict[str, Path]:
    """The modules the device commands (`genrecal.benchmarks.cli latency|accuracy`) import for `runtime`."""
    skip = NOT_ON_DEVICE + tuple(m for r, m in _BACKENDS.items() if r != runtime)
    return module_closure([ENTRY, _BACKENDS[runtime]], skip)


def copy_modules(modules: dict[str, Path], root: Path) -> None:
    """Write `modules` (module_closure's result) under `root` (the bundle folder)."""
    for rel, path in modules.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, root / rel)


def runtime_requirements(runtime: str) -> list[str]:
    """pip requirement lines for a bundle running `runtime`."""
    reqs = RUNTIME_REQUIREMENTS[runtime]
    if reqs is None:
        reqs = [r.split(";")[0].strip() for r in (metadata.requires("genrecal") or []) if "extra ==" not in r]
        reqs += ["psutil"]
    out = []
    for req in reqs:
        if req in _PINNED_HERE:
            try:
                req = f"{req}=={metadata.version(req)}"
            except metadata.PackageNotFoundError:
                pass
        out.append(req)
    return out
