#!/usr/bin/env bash
# bash scripts/setup.sh   -- creates .venv and installs genrecal with every extra (CPU machine, Python 3.11)
# torch/torchvision are pinned to the builds this machine kind carries on local disk.
#
# llama-cpp-python has no wheel on PyPI: pip compiles llama.cpp, by default with GGML_NATIVE=ON
# (-march=native), which on AMX CPUs (Sapphire Rapids and later, this machine kind) compiles in ggml's
# AMX path: every decode then segfaults. This script builds it itself with explicit flags: on x86-64,
# -DGGML_NATIVE=OFF (the AVX2/FMA/F16C baseline) plus the AVX-512 / VNNI / BF16 kernels this CPU
# reports in /proc/cpuinfo, never AMX (measured in README "llama.cpp build"); elsewhere llama.cpp's
# default. It never takes a wheel from pip's cache (which may hold one built with other flags), keeps
# its own in GENRECAL_WHEEL_CACHE keyed by version + flags + arch + Python, and records the flags in
# .venv/genrecal-llama-cpp-build.json (benchmark results and crash messages quote them).
# Override: LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" bash scripts/setup.sh  (e.g. the plain AVX2 baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_VERSION=0.3.36

LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS-$(bash scripts/llama_cmake_args.sh)}
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.14.1 torchvision==0.29.1

record=.venv/genrecal-llama-cpp-build.json
want="{\"llama_cpp_python\": \"$LLAMA_VERSION\", \"cmake_args\": \"$LLAMA_CMAKE_ARGS\", \"machine\": \"$(uname -m)\"}"
have_version=$(python -c "from importlib import metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null || true)
if [ "$have_version" != "$LLAMA_VERSION" ] || [ "$(cat "$record" 2>/dev/null)" != "$want" ]; then
  key=$(printf '%s %s %s %s' "$LLAMA_VERSION" "$LLAMA_CMAKE_ARGS" "$(uname -m)" "$(python -V)" | sha256sum | cut -c1-16)
  cache=${GENRECAL_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genrecal/wheels}/llama-cpp-python-$key
  wheel=$(ls "$cache"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    echo "building llama-cpp-python $LLAMA_VERSION with CMAKE_ARGS=\"$LLAMA_CMAKE_ARGS\" (4-6 min on 2 cores) ..."
    mkdir -p "$cache.tmp"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
      python -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
      "llama-cpp-python==$LLAMA_VERSION" -w "$cache.tmp"
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
    wheel=$(ls "$cache"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n 1)
  fi
  python -m pip uninstall -q -y llama-cpp-python 2>/dev/null || true
  python -m pip install -q "$wheel"
  echo "$want" > "$record"
fi
python -m pip install -q -e '.[all]'
# transformers.js for the client tests (tests/export/test_onnx_clients.py; they skip without node):
# --ignore-scripts because onnxruntime-node's install script downloads from a host this machine cannot
# reach; its CPU binaries ship in the npm package itself
if command -v npm >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' 2>/dev/null; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error --prefix js
fi
python - <<'EOF'
import llama_cpp
print("llama.cpp kernels:", llama_cpp.llama_print_system_info().decode().strip())
EOF
