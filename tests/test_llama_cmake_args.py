"""scripts/llama_cmake_args.sh: the llama.cpp build flags setup.sh picks from the CPU's feature flags."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_cmake_args.sh"
pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the flags are chosen on x86-64 only")

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt"
HASWELL = BASE + " avx avx2 fma f16c bmi1 bmi2"
SKYLAKE_X = HASWELL + " avx512f avx512dq avx512cd avx512bw avx512vl"
SAPPHIRE_RAPIDS = (SKYLAKE_X + " avx512ifma avx512vbmi avx512_vnni avx512_bf16 avx_vnni avx512_fp16 "
                   "amx_bf16 amx_tile amx_int8")


def _flags(tmp_path: Path, cpu_flags: str | None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if cpu_flags is not None:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\nbugs\t\t:\n")
        env["GENRECAL_CPUINFO"] = str(info)
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("cpu, expected", [
    (SAPPHIRE_RAPIDS, ["-DGGML_NATIVE=OFF", "-DGGML_AVX_VNNI=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON",
                       "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON"]),
    (SKYLAKE_X, ["-DGGML_NATIVE=OFF", "-DGGML_AVX512=ON"]),
    (HASWELL, ["-DGGML_NATIVE=OFF"]),
    (BASE, ["-DGGML_NATIVE=OFF", "-DGGML_AVX2=OFF", "-DGGML_FMA=OFF", "-DGGML_F16C=OFF", "-DGGML_BMI2=OFF"]),
], ids=["sapphire-rapids", "skylake-x", "haswell", "no-avx2"])
def test_flags_follow_the_cpu_and_never_enable_amx(tmp_path, cpu, expected):
    assert _flags(tmp_path, cpu) == expected


def test_this_host_gets_the_portable_build_without_amx(tmp_path):
    flags = _flags(tmp_path, None)
    assert flags[0] == "-DGGML_NATIVE=OFF" and not [f for f in flags if "AMX" in f]
