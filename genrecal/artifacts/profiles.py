"""Device profiles (`--profile`): what to run on a device class and its memory bandwidth.

    genrecal-bench latency --artifact out/export/gguf-q4_k_m --profile phone-class

A profile names the runtime/format to ship, the threads to use and the device's nominal DRAM
bandwidth (for the roofline bound when the bench cannot measure it there). `host` means "this
machine": all usable cores, any format, bandwidth measured at run time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from genrecal.errors import GenrecalError


class UnknownProfileError(GenrecalError):
    """A --profile name that is not defined here."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    runtime: str | None
    """Runtime to use on the device (None: whichever the artifact's format needs)."""
    artifact: str | None
    """The export to ship there: the subdir name `genrecal-export` writes (e.g. "gguf-q4_k_m")."""
    threads: int | None
    """CPU threads for the runtime (None: every usable core)."""
    bandwidth_gbs: float | None
    """Nominal peak DRAM bandwidth (GB/s); None: measure it where the bench runs."""
    ram_gb: float | None
    notes: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {p.name: p for p in (
    Profile("host", "this machine", runtime=None, artifact=None, threads=None, bandwidth_gbs=None, ram_gb=None,
            notes="bandwidth measured at run time"),
    Profile("jetson-orin-nano", "Jetson Orin Nano 8GB (6x Cortex-A78AE, Ampere 1024 cores, LPDDR5 128-bit)",
            runtime="tensorrt", artifact="tensorrt-plan", threads=6, bandwidth_gbs=68.0, ram_gb=8.0,
            notes="102 GB/s in the JetPack 6.2 'Super' mode; ship the plan, build engines on the device"),
    Profile("jetson-agx-orin", "Jetson AGX Orin 64GB (12x Cortex-A78AE, Ampere 2048 cores, LPDDR5 256-bit)",
            runtime="tensorrt", artifact="tensorrt-plan", threads=12, bandwidth_gbs=204.8, ram_gb=64.0,
            notes="ship the plan, build engines on the device (genrecal-export build-engine)"),
    Profile("jetson-agx-thor", "Jetson AGX Thor 128GB (14x Neoverse-V3AE, Blackwell 2560 cores, LPDDR5X 256-bit)",
            runtime="tensorrt", artifact="tensorrt-plan", threads=14, bandwidth_gbs=273.0, ram_gb=128.0,
            notes="JetPack 7; Edge-LLM runs FP8/NVFP4 here (Blackwell), Orin only FP16/INT8/INT4"),
    Profile("phone-class", "phone-class ARM board: 4 big cores, 8 GB LPDDR5 (64-bit, 6400 MT/s)",
            runtime="llamacpp", artifact="gguf-q4_k_m", threads=4, bandwidth_gbs=51.2, ram_gb=8.0,
            notes="little cores left idle: mixing them in slows llama.cpp's synchronised threads"),
)}


def get_profile(name: str | None) -> Profile:
    if name is None:
        return PROFILES["host"]
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfileError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
