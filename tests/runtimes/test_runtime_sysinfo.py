"""Device metadata and Jetson probes (parsers checked on real-format lines; tegrastats faked by a script)."""
from __future__ import annotations

import stat
import time

from genrecal.runtimes import sysinfo

# formats as printed on an Orin (JetPack 6) and a Nano (JetPack 4)
ORIN_LINE = ("11-22-2026 10:00:00 RAM 2345/7620MB (lfb 2x4MB) CPU [12%@1510,8%@1510] GR3D_FREQ 45% "
             "cpu@50C VDD_IN 5123mW/4987mW VDD_CPU_GPU_CV 1200mW/1100mW VDD_SOC 1500mW/1480mW")
NANO_LINE = "RAM 1500/3964MB CPU [10%@1479] GR3D_FREQ 0% POM_5V_IN 2345/2300 POM_5V_GPU 0/0 POM_5V_CPU 400/390"


def test_device_info_has_the_required_keys():
    info = sysinfo.device_info(threads=2)
    for key in ("cpu_model", "cores_logical", "cores_usable", "threads_used", "ram_gb", "os", "python"):
        assert key in info
    assert info["threads_used"] == 2 and info["cores_usable"] >= 1 and info["ram_gb"] > 0
    assert "torch" in info["libraries"]


def test_peak_rss_is_a_high_water_mark():
    before = sysinfo.peak_rss_mb()
    blob = bytearray(64 * 2**20)
    blob[::4096] = b"x" * len(blob[::4096])  # touch every page
    assert sysinfo.peak_rss_mb() >= before and sysinfo.peak_rss_mb() >= sysinfo.current_rss_mb() * 0.5
    del blob


def test_jetson_parsers():
    assert sysinfo.parse_l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic") == "36.4.3"
    assert sysinfo.jetpack_for_l4t("36.4.3") == "6.1/6.2"
    assert sysinfo.parse_nvpmodel("NV Power Mode: MAXN_SUPER\n2\n") == "MAXN_SUPER (2)"
    assert sysinfo.parse_tegrastats_power_mw(ORIN_LINE) == 5123
    assert sysinfo.parse_tegrastats_power_mw(NANO_LINE) == 2345
    assert sysinfo.parse_tegrastats_power_mw("RAM 1/2MB CPU [1%@1]") is None


def test_no_jetson_here_means_no_jetson_keys():
    if not sysinfo.NV_TEGRA_RELEASE.exists():
        assert sysinfo.jetson_info() == {} and "jetson" not in sysinfo.device_info()


def test_power_sampler_turns_tegrastats_into_energy_per_token(tmp_path):
    fake = tmp_path / "tegrastats"
    fake.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN_LINE}'; sleep 0.02; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with sysinfo.PowerSampler(interval_ms=20, exe=str(fake)) as power:
        time.sleep(0.3)
    summary = power.summary(tokens=10)
    assert summary["samples"] >= 3 and summary["mean_power_w"] == 5.123
    assert abs(summary["energy_per_token_j"] - summary["energy_j"] / 10) < 1e-3


def test_power_sampler_is_inert_without_tegrastats():
    with sysinfo.PowerSampler(exe=None) as power:
        pass
    if not power.available:
        assert power.summary(tokens=5) is None
