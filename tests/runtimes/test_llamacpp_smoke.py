"""The llama.cpp smoke decode: a real child process per GGUF pair; a native crash or hang becomes one line."""
from __future__ import annotations

import json
import sys

import pytest

from genrecal.runtimes import llamacpp_smoke as smoke
from genrecal.runtimes import sysinfo

SYSTEM_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
               "AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 0 | REPACK = 1 | ")


def test_system_info_is_parsed_into_the_features_set_to_one():
    parsed = sysinfo.parse_system_info(SYSTEM_INFO)
    assert parsed == {"CPU": ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VNNI",
                              "AMX_INT8", "LLAMAFILE", "REPACK"]}


def _info_line(features: str) -> str:
    info = sysinfo.llama_cpp_info(features)
    return f"print({smoke._INFO_TAG!r} + {json.dumps(json.dumps(info))}, flush=True)"


def test_a_segfault_in_the_child_is_one_line_naming_backend_build_and_fix():
    code = _info_line(SYSTEM_INFO) + "; import ctypes; ctypes.string_at(0)"  # a real SIGSEGV
    with pytest.raises(smoke.LlamaCppCrash) as err:
        smoke.run_child([sys.executable, "-c", code], "model.gguf", timeout_s=60)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("llama.cpp backend (llama-cpp-python ") and "crashed with SIGSEGV" in msg
    assert "CPU kernels SSE3, SSSE3, AVX, AVX2" in msg and "AMX path is the known cause" in msg
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in msg and "bash scripts/setup.sh" in msg and smoke.SKIP_ENV in msg


def test_a_child_that_dies_before_reporting_and_an_abort_message():
    code = "import os, sys; sys.stderr.write('ggml.c:123: GGML_ASSERT(x) failed\\n'); sys.stderr.flush(); os.abort()"
    with pytest.raises(smoke.LlamaCppCrash) as err:
        smoke.run_child([sys.executable, "-c", code], "model.gguf", timeout_s=60)
    msg = str(err.value)
    assert "crashed with SIGABRT" in msg and "crashed before reporting" in msg and "GGML_ASSERT(x) failed" in msg


def test_a_hung_child_is_killed_and_reported():
    with pytest.raises(smoke.LlamaCppCrash, match=r"did not finish a 2-token smoke decode of m.gguf in 1 s"):
        smoke.run_child([sys.executable, "-c", "import time; time.sleep(60)"], "m.gguf", timeout_s=1)


def test_a_python_error_in_the_child_is_left_to_the_in_process_load():
    out = smoke.run_child([sys.executable, "-c", "raise ValueError('bad file')"], "m.gguf", timeout_s=60)
    assert out["child_error"] == "exit 1: ValueError: bad file"


def test_smoke_decodes_a_real_export_once_per_process(exported, monkeypatch):
    from genrecal.artifacts.gguf_pair import layout

    model = exported("gguf", "f16") / layout.MODEL_FILE
    monkeypatch.setattr(smoke, "_checked", {})
    calls = []
    real = smoke.run_child
    monkeypatch.setattr(smoke, "run_child", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(2):
        result = smoke.ensure_decodes(model, threads=1)
    assert len(calls) == 1  # cached for the process
    assert len(result["tokens"]) == 2 and result["tokens_in"] > 0 and "child_error" not in result
    assert "AVX2" in result["cpu_features"] and result["llama_cpp_python"] == "0.3.36"
    monkeypatch.setenv(smoke.SKIP_ENV, "0")
    assert smoke.ensure_decodes(model, threads=2) is None


def test_a_file_llama_cpp_refuses_is_left_to_the_in_process_load(tmp_path, monkeypatch):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr(smoke, "_checked", {})
    result = smoke.ensure_decodes(bad, threads=1)
    assert result["child_error"].startswith("exit 1: ") and "AVX2" in result["cpu_features"]


def test_the_installed_build_is_the_one_setup_chose():
    """scripts/setup.sh records its CMake flags; a portable build must not carry the AMX kernels."""
    pytest.importorskip("llama_cpp")
    record = sysinfo.build_record()
    if record is None:
        pytest.skip("llama-cpp-python was not installed by scripts/setup.sh (no build record in this venv)")
    info = sysinfo.llama_cpp_info()
    assert record["llama_cpp_python"] == info["llama_cpp_python"]
    if "-DGGML_NATIVE=OFF" in record["cmake_args"].split():
        assert not [f for f in info["cpu_features"] if f.startswith("AMX")], info["system_info"]
