#!/usr/bin/env bash
# bash scripts/llama_cmake_args.sh   -- prints the CMAKE_ARGS scripts/setup.sh builds llama-cpp-python with.
# x86-64: -DGGML_NATIVE=OFF (llama.cpp's portable AVX2/FMA/F16C baseline) plus the AVX-512 / VNNI / BF16
# options this CPU lists in /proc/cpuinfo, and never AMX (GGML_NATIVE=ON compiles ggml's AMX kernels on
# Sapphire Rapids and later, and every decode then segfaults on this project's machines; README
# "llama.cpp build" has the measurements). A CPU without AVX2 gets the SSE baseline. Other
# architectures: nothing (llama.cpp's default native build). GENRECAL_CPUINFO=FILE reads another cpuinfo.
set -euo pipefail
[ "$(uname -m)" = x86_64 ] || exit 0
cpu=" $(grep -m1 '^flags' "${GENRECAL_CPUINFO:-/proc/cpuinfo}" | cut -d: -f2) "
has() { for f in "$@"; do case "$cpu" in *" $f "*) ;; *) return 1 ;; esac; done; }
args="-DGGML_NATIVE=OFF"
if ! has avx2 fma f16c bmi2; then args="$args -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF"; fi
if has avx_vnni; then args="$args -DGGML_AVX_VNNI=ON"; fi
if has avx512f avx512cd avx512vl avx512dq avx512bw; then
  args="$args -DGGML_AVX512=ON"
  if has avx512vbmi; then args="$args -DGGML_AVX512_VBMI=ON"; fi
  if has avx512_vnni; then args="$args -DGGML_AVX512_VNNI=ON"; fi
  if has avx512_bf16; then args="$args -DGGML_AVX512_BF16=ON"; fi
fi
echo "$args"
