"""Edge-LLM's exporter in an isolated, cached virtual environment.

    from genrecal.export.edgellm.env import edgellm_python
    python = edgellm_python()          # .../edgellm-0.11.0/venv/bin/python (made once, then reused)

`tensorrt-edgellm` 0.11.0 pins transformers 5.14.1 and torch 2.13 (genrecal runs 5.23 / 2.14), so it never
goes into genrecal's environment. Where it comes from, first hit wins (as for llama.cpp's converter,
genrecal/export/gguf/converter.py):
  1. $GENRECAL_EDGELLM_PYTHON (an interpreter that imports tensorrt_edgellm at the pinned version)
  2. the cache: $GENRECAL_CACHE or ~/.cache/genrecal, edgellm-<version>/venv, complete when its
     genrecal_env.json (written last, with `pip freeze`) is there
  3. `python -m venv` + `pip install tensorrt-edgellm[export]==<version>` + layout.EXTRA_REQUIREMENTS into
     the cache (pip's own index settings apply; ~1 GB, about a minute where the wheels are cached)
A half-made environment (no genrecal_env.json), or one made for other requirements, is made again.
The exporter and the quantiser run as `python -m` in a child process (run_module), never imported here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from genrecal.errors import GenrecalError
from genrecal.artifacts import edgellm as layout

MARKER = "genrecal_env.json"


class EdgeLLMError(GenrecalError):
    """Edge-LLM's environment cannot be made, or its exporter/quantiser failed or refused the model."""


def cache_root() -> Path:
    return Path(os.environ.get("GENRECAL_CACHE") or Path.home() / ".cache" / "genrecal")


def env_dir(root: Path | None = None) -> Path:
    return (root or cache_root()) / f"edgellm-{layout.VERSION}" / "venv"


def requirements() -> list[str]:
    return [f"{layout.PACKAGE}[export]=={layout.VERSION}", *layout.EXTRA_REQUIREMENTS]


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _run(cmd: list[str], what: str, timeout: int, env: dict | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise EdgeLLMError(f"{what} took over {timeout} s") from None
    if done.returncode:
        raise EdgeLLMError(f"{what} failed: {last_error(done.stderr + done.stdout)}")
    return done.stdout


def create(venv: Path, timeout: int = 1800, log=print) -> Path:
    """Make the venv at `venv` and install Edge-LLM's exporter into it; returns its python."""
    if venv.exists():
        shutil.rmtree(venv)  # a half-made one (no marker): start clean
    venv.parent.mkdir(parents=True, exist_ok=True)
    log(f"edgellm: creating {venv} with {' '.join(requirements())} (once; cached after)")
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "venv", str(venv)], "python -m venv", 300)
    python = _python_in(venv)
    _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements()],
         f"pip install {' '.join(requirements())}", timeout)
    version = _run([str(python), "-c", "import tensorrt_edgellm as m; print(m.__version__)"],
                   "import tensorrt_edgellm", 300).strip()
    if version != layout.VERSION:
        raise EdgeLLMError(f"{venv}: tensorrt_edgellm {version} installed, {layout.VERSION} pinned")
    freeze = _run([str(python), "-m", "pip", "freeze"], "pip freeze", 300).split()
    marker = {"edgellm_version": version, "requirements": requirements(), "python": str(python),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds": round(time.perf_counter() - t0, 1), "freeze": freeze}
    (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: the env counts from here
    return python


def edgellm_python(create_if_missing: bool = True, log=print) -> Path:
    """The interpreter of Edge-LLM's environment (see the module docstring for where it comes from)."""
    given = os.environ.get("GENRECAL_EDGELLM_PYTHON")
    if given:
        if not Path(given).is_file():
            raise EdgeLLMError(f"GENRECAL_EDGELLM_PYTHON={given} is not a file")
        return Path(given)
    venv = env_dir()
    if (venv / MARKER).is_file() and _python_in(venv).is_file():
        if json.loads((venv / MARKER).read_text()).get("requirements") == requirements():
            return _python_in(venv)
        log(f"edgellm: {venv} was made for other requirements; making it again")
    if not create_if_missing:
        raise EdgeLLMError(f"Edge-LLM {layout.VERSION}'s environment is not in {venv.parent} "
                           "(genrecal-export --target jetson makes it; needs pip access to PyPI)")
    return create(venv, log=log)


def env_facts(python: Path) -> dict:
    """What the manifest records about the environment: version and the installed pins that matter."""
    marker = Path(python).parents[1] / MARKER
    facts = {"python": str(python), "edgellm_version": layout.VERSION}
    if marker.is_file():
        data = json.loads(marker.read_text())
        keep = ("tensorrt-edgellm", "transformers", "torch", "onnx", "nvidia-modelopt", "onnxscript")
        pins = {p.split("==")[0].lower(): p.split("==")[1] for p in data.get("freeze", []) if "==" in p}
        facts.update(edgellm_version=data["edgellm_version"], created=data.get("created"),
                     packages={k: pins[k] for k in keep if k in pins})
    return facts


def run_module(python: Path, module: str, args: list[str], what: str, *, timeout: int = 1800,
               env: dict | None = None) -> str:
    """`python -m module args...` in Edge-LLM's environment, offline (no hub downloads), with a clean
    PYTHONPATH. Returns stdout+stderr; raises EdgeLLMError "<what> failed: <its last error line>"."""
    child = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "HF_DATASETS_OFFLINE": "1", "PYTHONNOUSERSITE": "1", **(env or {})}
    try:
        done = subprocess.run([str(python), "-m", module, *args], capture_output=True, text=True,
                              timeout=timeout, env=child)
    except subprocess.TimeoutExpired:
        raise EdgeLLMError(f"{what} took over {timeout} s") from None
    log = done.stdout + done.stderr
    if done.returncode:
        raise EdgeLLMError(f"{what} failed: {last_error(log)}")
    return log


def last_error(log: str) -> str:
    """The tool's own reason: the last line naming an Error/error, else the last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or " ERROR " in ln or ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:400]
