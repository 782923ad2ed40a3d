"""What a benchmark records about the machine it ran on: peak RSS, CPU, RAM, OS, and on a Jetson
the JetPack/L4T release, TensorRT version, nvpmodel mode and board power from `tegrastats`.

    python -c "from genrecal.runtimes import sysinfo; print(sysinfo.device_info())"

Every probe is best-effort: a missing file or tool leaves its key out (or None), never raises.
psutil is used when installed (the `bench` extra) and /proc otherwise.
"""
from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
LLAMA_CPP_BUILD_RECORD = "genrecal-llama-cpp-build.json"  # in the venv root (sys.prefix), written by scripts/setup.sh
# L4T (the Jetson Linux release in /etc/nv_tegra_release) -> the JetPack that ships it
L4T_TO_JETPACK = {
    "35.1": "5.0.2", "35.2": "5.1", "35.3": "5.1.1", "35.4": "5.1.2", "35.5": "5.1.3", "35.6": "5.1.4",
    "36.2": "6.0 DP", "36.3": "6.0", "36.4": "6.1/6.2", "38.2": "7.0",
}
# tegrastats power rails for the whole board, newest naming first (Orin: VDD_IN; Xavier/Nano: POM_5V_IN)
_BOARD_RAILS = ("VDD_IN", "POM_5V_IN")
_RAIL_RE = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (MiB); a high-water mark, never decreases."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_model() -> str:
    """'AMD EPYC ...' on x86; the board name on ARM boards (/proc/cpuinfo has no model name there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if DEVICE_TREE_MODEL.is_file():
        return DEVICE_TREE_MODEL.read_text(errors="replace").strip("\x00 \n")
    return platform.processor() or platform.machine()


def ram_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 2)
        except OSError:
            pass
    return None


def physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except ImportError:
        return None


def package_version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def device_info(threads: int | None = None) -> dict:
    """CPU model, cores (physical/logical/usable), threads used, RAM, OS, library versions; Jetson facts."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores_physical": physical_cores(),
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "threads_used": threads,
        "ram_gb": ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": {name: v for name in ("torch", "transformers", "onnxruntime", "llama_cpp_python", "tensorrt")
                      if (v := package_version(name.replace("_", "-") if name == "llama_cpp_python" else name))},
    }
    gpu = gpu_name()
    if gpu:
        info["gpu"] = gpu
    llama = llama_cpp_build()
    if llama:
        info["llama_cpp"] = llama
    jetson = jetson_info()
    if jetson:
        info["jetson"] = jetson
    return info


def llama_cpp_build() -> dict | None:
    """llama.cpp's CPU kernels in use + how it was built, when llama_cpp is already loaded (never imports it)."""
    if "llama_cpp" not in sys.modules:
        return None
    try:
        return llama_cpp_info()
    except Exception as exc:  # noqa: BLE001 - a missing symbol must not break a benchmark
        return {"error": f"llama_print_system_info failed: {exc}"}


def llama_cpp_info(system_info: str | None = None) -> dict:
    """llama.cpp's system info (the kernels compiled in: `system_info`, else llama.cpp's own, which imports
    llama_cpp), parsed, plus the build record scripts/setup.sh wrote: benchmark results and crash messages
    carry it, so a figure says which kernels produced it."""
    if system_info is None:
        import llama_cpp

        system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    features = parse_system_info(system_info)
    return {"llama_cpp_python": llama_cpp_version(), "system_info": system_info,
            "cpu_features": features.get("CPU", []), "build": build_record()}


def parse_system_info(text: str) -> dict[str, list[str]]:
    """'CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 0 | ... ' -> {"CPU": ["SSE3", "AVX2"]} (features set to 1)."""
    out: dict[str, list[str]] = {}
    for part in re.split(r"\|", text):
        if ":" in part:  # a new backend section starts: "CPU : SSE3 = 1"
            name, part = part.split(":", 1)
            out.setdefault(name.strip(), [])
            current = name.strip()
        m = re.match(r"\s*([A-Za-z0-9_]+)\s*=\s*(\d+)", part)
        if m and out and m.group(2) != "0":
            out[current].append(m.group(1))
    return out


def build_record() -> dict | None:
    """What scripts/setup.sh recorded about the llama-cpp-python build in this venv, or None."""
    try:
        return json.loads((Path(sys.prefix) / LLAMA_CPP_BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return None


def llama_cpp_version() -> str:
    return package_version("llama-cpp-python") or "not installed"


def gpu_name() -> str | None:
    """The CUDA device name when torch is already imported and sees a GPU (never imports torch)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # a broken driver must not break a CPU benchmark
        return None
    return None


def parse_l4t_release(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> '36.4.3'."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_for_l4t(l4t: str) -> str | None:
    major_minor = ".".join(l4t.split(".")[:2])
    return L4T_TO_JETPACK.get(major_minor)


def jetson_info() -> dict:
    """{} off a Jetson; else L4T/JetPack release, board model, TensorRT version, nvpmodel mode."""
    if not NV_TEGRA_RELEASE.is_file():
        return {}
    l4t = parse_l4t_release(NV_TEGRA_RELEASE.read_text(errors="replace"))
    out = {"l4t": l4t, "jetpack": jetpack_for_l4t(l4t) if l4t else None}
    if DEVICE_TREE_MODEL.is_file():
        out["board"] = DEVICE_TREE_MODEL.read_text(errors="replace").strip("\x00 \n")
    out["tensorrt"] = package_version("tensorrt") or _tensorrt_module_version()
    out["nvpmodel"] = nvpmodel_mode()
    out["tegrastats"] = shutil.which("tegrastats") is not None
    return out


def _tensorrt_module_version() -> str | None:
    try:
        import tensorrt

        return tensorrt.__version__
    except Exception:
        return None


def parse_nvpmodel(text: str) -> str | None:
    """`nvpmodel -q` output ('NV Power Mode: MAXN\\n0') -> 'MAXN (0)'."""
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    ids = [ln.strip() for ln in text.splitlines() if ln.strip().isdigit()]
    return f"{m.group(1)} ({ids[0]})" if ids else m.group(1)


def nvpmodel_mode() -> str | None:
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvpmodel(res.stdout + res.stderr)


def parse_tegrastats_power_mw(line: str) -> float | None:
    """Board input power (mW) from one tegrastats line: the current value of VDD_IN (Orin) or
    POM_5V_IN (Xavier/Nano), e.g. '... VDD_IN 5123mW/4987mW ...' -> 5123."""
    rails = {name: float(now) for name, now, _avg in _RAIL_RE.findall(line)}
    for rail in _BOARD_RAILS:
        if rail in rails:
            return rails[rail]
    return None


class PowerSampler:
    """Samples board power with `tegrastats --interval MS` while the `with` block runs.

    Off a Jetson (no tegrastats) `available` is False and `summary()` returns None. The energy of
    the block is mean power x wall time, so per-token energy = energy / tokens generated inside it.
    """

    def __init__(self, interval_ms: int = 100, exe: str | None = None):
        self.interval_ms = interval_ms
        self.exe = exe or shutil.which("tegrastats")
        self.available = self.exe is not None
        self.samples_mw: list[float] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._t0 = self._t1 = 0.0

    def __enter__(self) -> "PowerSampler":
        self._t0 = time.perf_counter()
        if self.available:
            try:
                self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)],
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self.available = False
                return self
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            mw = parse_tegrastats_power_mw(line)
            if mw is not None:
                self.samples_mw.append(mw)

    def __exit__(self, *exc) -> None:
        self._t1 = time.perf_counter()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            if self._reader is not None:
                self._reader.join(timeout=5)

    def summary(self, tokens: int) -> dict | None:
        """Mean/peak power (W), energy (J) and energy per generated token (J), or None."""
        if not self.samples_mw:
            return None
        seconds = self._t1 - self._t0
        mean_w = sum(self.samples_mw) / len(self.samples_mw) / 1000
        energy = mean_w * seconds
        return {
            "source": "tegrastats", "samples": len(self.samples_mw), "seconds": round(seconds, 3),
            "mean_power_w": round(mean_w, 3), "peak_power_w": round(max(self.samples_mw) / 1000, 3),
            "energy_j": round(energy, 3), "tokens": tokens,
            "energy_per_token_j": round(energy / tokens, 5) if tokens else None,
        }
