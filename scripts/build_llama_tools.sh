#!/usr/bin/env bash
# bash scripts/build_llama_tools.sh   -- builds llama.cpp's own clients (llama-mtmd-cli, llama-server) from the
# llama.cpp source of the pinned llama-cpp-python (its sdist's vendor/llama.cpp, found or downloaded like the GGUF
# converter's: genrecal.export.gguf.converter.llama_cpp_source), with the CPU flags of scripts/llama_cmake_args.sh
# (never AMX: see that script). Prints the folder holding the two binaries.
#
# The build goes once into a cache folder outside the repository, keyed by version + flags + machine:
#   ${GENRECAL_CACHE:-~/.cache/genrecal}/llama-tools-<llama-cpp-python version>-<hash of flags>/bin
# (written atomically: a folder that exists is complete). ~5-10 min on 2 cores; run it under `nice` on a shared
# machine. The GGUF client matrix (benchmarks/gguf_client_matrix.py) and its tests find the tools there
# (genrecal.benchmarks.gguf_clients.llama_tools).
# Override: LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" (flags), GENRECAL_LLAMA_CPP_SRC=DIR (source),
# CMAKE_BUILD_PARALLEL_LEVEL=N (jobs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
flags=${LLAMA_CMAKE_ARGS-$(bash scripts/llama_cmake_args.sh)}
out=$("$PY" -c "from genrecal.benchmarks.gguf_clients import tools_dir; print(tools_dir('''$flags'''))")
if [ -x "$out/bin/llama-mtmd-cli" ] && [ -x "$out/bin/llama-server" ]; then echo "$out/bin"; exit 0; fi
src=$("$PY" -c "from genrecal.export.gguf.converter import llama_cpp_source; print(llama_cpp_source())")
tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp" && mkdir -p "$tmp/bin"
gen=(); if command -v ninja >/dev/null; then gen=(-G Ninja); fi
echo "building llama-mtmd-cli + llama-server from $src with $flags into $out ..." >&2
# static, no web UI (it would be downloaded), no OpenSSL, no tests/examples: the two binaries and nothing else
# shellcheck disable=SC2086
cmake -S "$src" -B "$tmp/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF $flags >"$tmp/cmake.log" 2>&1 || { tail -20 "$tmp/cmake.log" >&2; exit 1; }
cmake --build "$tmp/build" --target llama-mtmd-cli llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log" >&2; exit 1; }
cp "$tmp/build/bin/llama-mtmd-cli" "$tmp/build/bin/llama-server" "$tmp/bin/"
"$PY" - "$tmp" "$src" "$flags" <<'EOF'
import json, platform, sys
from importlib import metadata
tmp, src, flags = sys.argv[1:]
record = {"llama_cpp_python": metadata.version("llama-cpp-python"), "source": src, "cmake_args": flags,
          "machine": platform.machine(), "targets": ["llama-mtmd-cli", "llama-server"]}
open(f"{tmp}/build.json", "w").write(json.dumps(record, indent=2) + "\n")
EOF
rm -rf "$tmp/build"
rm -rf "$out" && mv "$tmp" "$out"
trap - EXIT
echo "$out/bin"
