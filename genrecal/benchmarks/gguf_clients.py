"""llama.cpp's own clients on genrecal's GGUF pairs: llama-cpp-python's MTMDChatHandler, llama-mtmd-cli and
llama-server (OpenAI-style chat), the last two built from the pinned llama.cpp source by
scripts/build_llama_tools.sh.

    from genrecal.benchmarks.gguf_clients import llama_tools, mtmd_chat_handler, mtmd_cli, llama_server
    tools = llama_tools()                                        # Path to bin/, or None (tools_missing() says why)
    mtmd_chat_handler("EXPORT/gguf", image, "What shape?", 8)   # {"tokens": [...]} or {"error": one line}
    mtmd_cli(tools, "EXPORT/gguf", image, "What shape?", 8)      # {"tokens": [...]} or {"error": one line}
    llama_server(tools, "EXPORT/gguf", image, "What shape?", 8)  # {"tokens": [...]} or {"error": one line}

Every client is given the artifact dir exactly as genrecal-export wrote it (model.gguf + mmproj.gguf), renders
the prompt with the chat template in model.gguf and greedy-decodes; tokens come back as ids (the CLI's and the
server's text is tokenised back with the artifact's own vocabulary, see `text_to_ids`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("llama-mtmd-cli", "llama-server")
BUILD_SCRIPT = REPO / "scripts" / "build_llama_tools.sh"


def cmake_flags() -> str:
    """The CPU flags scripts/llama_cmake_args.sh gives here (LLAMA_CMAKE_ARGS overrides, as in the build script)."""
    if "LLAMA_CMAKE_ARGS" in os.environ:
        return os.environ["LLAMA_CMAKE_ARGS"]
    done = subprocess.run(["bash", str(REPO / "scripts" / "llama_cmake_args.sh")], capture_output=True, text=True)
    return done.stdout.strip()


def tools_dir(flags: str | None = None) -> Path:
    """The cache folder scripts/build_llama_tools.sh builds into for these flags and the installed llama-cpp-python."""
    from genrecal.export.gguf.converter import cache_root, llama_cpp_version

    flags = cmake_flags() if flags is None else flags
    key = hashlib.sha256(f"{flags} {platform.machine()}".encode()).hexdigest()[:12]
    return cache_root() / f"llama-tools-{llama_cpp_version()}-{key}"


def tools_missing() -> str | None:
    """Why llama-mtmd-cli / llama-server cannot run here, or None."""
    try:
        bin_dir = tools_dir() / "bin"
    except Exception as exc:  # llama-cpp-python not installed
        return str(exc).splitlines()[0]
    absent = [t for t in TOOLS if not (bin_dir / t).is_file()]
    if absent:
        return (f"{', '.join(absent)} not built in {bin_dir.parent} "
                f"(run: nice -n 10 bash scripts/build_llama_tools.sh)")
    return None


def llama_tools() -> Path | None:
    """bin/ holding llama-mtmd-cli and llama-server for this llama-cpp-python and these flags, or None."""
    return None if tools_missing() else tools_dir() / "bin"


def llama_cpp_python_version() -> str:
    return metadata.version("llama-cpp-python")
