#!/usr/bin/env bash
# bash scripts/setup.sh   -- creates .venv and installs genrecal with every extra (CPU machine, Python 3.11)
# torch/torchvision are pinned to the builds this machine kind carries on local disk.
#
# llama-cpp-python has no wheel on PyPI: pip compiles llama.cpp, by default with GGML_NATIVE=ON
# (-march=native), which on AMX CPUs (Sapphire Rapids and later, this machine kind) compiles in ggml's
# AMX path: every decode then segfaults. This script builds it itself with LLAMA_CMAKE_ARGS (default
# -DGGML_NATIVE=OFF: the portable x86-64 AVX2/FMA/F16C baseline, no AVX-512, no AMX; see README
# "llama.cpp build"), never from pip's cache (which may hold a wheel built with other flags), keeps the
# wheel in its own cache keyed by version + flags + arch, and records the flags in
# .venv/genrecal-llama-cpp-build.json (benchmark results and crash messages quote it).
# Overrides: LLAMA_CMAKE_ARGS="..." bash scripts/setup.sh; GENRECAL_WHEEL_CACHE=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_VERSION=0.3.36
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF}
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
    echo "building llama-cpp-python $LLAMA_VERSION with CMAKE_ARGS=\"$LLAMA_CMAKE_ARGS\" (3-12 min on 2 cores) ..."
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
python - <<'EOF'
import llama_cpp
print("llama.cpp kernels:", llama_cpp.llama_print_system_info().decode().strip())
EOF
