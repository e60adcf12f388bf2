"""What this CPU can do natively, read from the kernel's flags (never assumed from the machine's class).

bf16 is served only where the CPU computes it natively: ``avx512_bf16`` (AVX-512 BF16 dot products) or
``amx_bf16`` (AMX tiles). Elsewhere (AVX2-only machines) a bf16 request is refused in one line rather than
emulated, which is slower than float32. INT8 speed comes from VNNI (``avx512_vnni``, ``avx_vnni``) or AMX int8.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: the flags a benchmark or a refusal names, widest first
REPORTED_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and its instruction-set flags (lower case, as /proc/cpuinfo spells them)."""

    name: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """Whether the CPU has int8 dot-product instructions (VNNI or AMX int8)."""
        return any(flag in self.flags for flag in INT8_FLAGS)

    def reported(self) -> list[str]:
        """The flags that decide CPU precisions, those present, widest first."""
        return [flag for flag in REPORTED_FLAGS if flag in self.flags]

    def describe(self) -> str:
        """``Intel(R) Xeon(R) Processor (amx_bf16, avx512_bf16, ...)``."""
        return f"{self.name} ({', '.join(self.reported()) or 'none of ' + ', '.join(REPORTED_FLAGS)})"


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features of the first processor described in ``text`` (the format of /proc/cpuinfo)."""
    name, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name == "unknown":
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return CpuFeatures(name, flags)


def detect_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    """This machine's CPU features; no flags where the kernel does not list them (so nothing is claimed)."""
    try:
        return parse_cpuinfo(cpuinfo.read_text())
    except OSError:
        return CpuFeatures(platform.processor() or "unknown", frozenset())


def bf16_refusal(cpu: CpuFeatures) -> str | None:
    """Why bf16 cannot run on ``cpu`` (one line), or None when it can."""
    if cpu.native_bf16:
        return None
    return (f"bf16 needs a CPU with native bfloat16 ({' or '.join(BF16_FLAGS)}); this one has none ({cpu.describe()}):"
            " use --precision fp32, or int8 where the bundle has it")
