"""llama.cpp's own HF -> GGUF converter, taken from the sdist of the installed llama-cpp-python.

    from genrecal.export.gguf.converter import convert, llama_cpp_source
    src = llama_cpp_source()                       # .../vendor/llama.cpp (cached, or pip download)
    convert("student/", "model.gguf", "f32", pre="gpt-2")
    convert("student/", "mmproj.gguf", "f16", mmproj=True)

The converter is a script inside llama.cpp's C++ tree (convert_hf_to_gguf.py + conversion/ + its own
gguf-py), shipped in the llama-cpp-python sdist and matched to the llama.cpp the wheel was built
from. Where it comes from, first hit wins:
  1. $GENRECAL_LLAMA_CPP_SRC (a llama.cpp dir holding convert_hf_to_gguf.py)
  2. the cache: $GENRECAL_CACHE or ~/.cache/genrecal, llama_cpp_python-<version>/vendor/llama.cpp
  3. `pip download --no-binary :all: --no-deps llama-cpp-python==<version>` into the cache, extracted
It runs in a child process (its gguf-py must not meet the installed gguf package) through
converter_run.py, which adds one thing: a pre-tokenizer name for BPE tokenizers whose hash the
converter does not know. The converter also needs `sentencepiece` importable (it tries SentencePiece
before BPE for Qwen-family vocabularies).
"""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from genrecal.export.gguf.layout import GgufExportError

PACKAGE = "llama-cpp-python"
SCRIPT = "convert_hf_to_gguf.py"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


def llama_cpp_version() -> str:
    """The installed llama-cpp-python version, or GgufExportError."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise GgufExportError(f"{PACKAGE} is not installed; its sdist's converter must match it") from None


def cache_root() -> Path:
    return Path(os.environ.get("GENRECAL_CACHE") or Path.home() / ".cache" / "genrecal")


def _source_in(root: Path, version: str) -> Path:
    return root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"


def _download(version: str, root: Path, timeout: int) -> None:
    """pip download the sdist and extract it under root (atomically: a half-extracted tree never counts)."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
               f"{PACKAGE}=={version}", "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise GgufExportError(f"pip download of the {PACKAGE} {version} sdist took over {timeout} s") from None
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode or not archives:
            last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            raise GgufExportError(f"cannot download the {PACKAGE} {version} sdist (llama.cpp's converter): {last}")
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp, filter="data")
        extracted = Path(tmp) / f"llama_cpp_python-{version}"
        if not (extracted / "vendor" / "llama.cpp" / SCRIPT).is_file():
            raise GgufExportError(f"the {PACKAGE} {version} sdist has no vendor/llama.cpp/{SCRIPT}")
        extracted.rename(root / extracted.name)


def llama_cpp_source(download: bool = True, timeout: int = 300) -> Path:
    """The llama.cpp source dir holding convert_hf_to_gguf.py for the installed llama-cpp-python.

    Raises GgufExportError (one line) when it is not found and cannot be downloaded.
    """
    env = os.environ.get("GENRECAL_LLAMA_CPP_SRC")
    if env:
        if not (Path(env) / SCRIPT).is_file():
            raise GgufExportError(f"GENRECAL_LLAMA_CPP_SRC={env} holds no {SCRIPT}")
        return Path(env)
    version = llama_cpp_version()
    src = _source_in(cache_root(), version)
    if not (src / SCRIPT).is_file():
        if not download:
            raise GgufExportError(f"llama.cpp's converter for {PACKAGE} {version} is not in {cache_root()}")
        _download(version, cache_root(), timeout)
    return src


def convert(hf_dir, out_file, outtype: str = "f32", *, mmproj: bool = False, pre: str | None = None,
            flags: tuple[str, ...] = (), src: Path | None = None, timeout: int = 600) -> Path:
    """Run llama.cpp's converter on a transformers dir: the text model, or (mmproj=True) the vision
    tower + projector. outtype: f32 | f16 | bf16 | q8_0. pre: llama.cpp pre-tokenizer name used only
    when the converter does not recognise the BPE tokenizer's hash. flags: more converter flags (e.g.
    "--no-mtp"). Raises GgufExportError with the converter's last error line."""
    if outtype not in OUTTYPES:
        raise GgufExportError(f"llama.cpp's converter writes {', '.join(OUTTYPES)}, not {outtype!r}")
    src = src or llama_cpp_source()
    runner = Path(__file__).with_name("converter_run.py")
    cmd = [str(runner), "--src", str(src), *(["--pre", pre] if pre else []), "--",
           str(hf_dir), "--outfile", str(out_file), "--outtype", outtype, *(["--mmproj"] if mmproj else []), *flags]
    what = f"llama.cpp's converter ({'mmproj' if mmproj else 'text'})"
    run_script(cmd, what, hf_dir, timeout=timeout)  # the converter's own gguf-py, not the installed one
    if not Path(out_file).is_file():
        raise GgufExportError(f"{what} wrote no {out_file}")
    return Path(out_file)


def run_script(cmd: list[str], what: str, subject, *, pythonpath: str = "", timeout: int = 600) -> str:
    """Run a llama.cpp Python script (cmd[0]; this interpreter) in a child process with PYTHONPATH
    set to `pythonpath` (the sdist's gguf-py, never the installed gguf). Returns its stdout; raises
    GgufExportError "<what> failed on <subject>: <its last error line>" on a non-zero exit or timeout."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    try:
        done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise GgufExportError(f"{what} took over {timeout} s on {subject}") from None
    if done.returncode:
        raise GgufExportError(f"{what} failed on {subject}: {_last_error(done.stderr + done.stdout)}")
    return done.stdout


def _last_error(log: str) -> str:
    """The converter's own reason: the last 'Error'/'ERROR' line, else the last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]
