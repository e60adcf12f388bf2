"""What a CPU precision needs of the CPU: bf16 is served only where the CPU computes it natively
(``avx512_bf16`` or ``amx_bf16``); elsewhere (AVX2-only machines) a bf16 request is refused in one line rather
than emulated, which is slower than float32. The CPU's facts themselves come from ``sk_deploy.machine``.
"""

from __future__ import annotations

from sk_deploy.machine import BF16_FLAGS, CpuFeatures, detect_cpu, parse_cpuinfo

__all__ = ["CpuFeatures", "bf16_refusal", "detect_cpu", "parse_cpuinfo"]


def bf16_refusal(cpu: CpuFeatures) -> str | None:
    """Why bf16 cannot run on ``cpu`` (one line), or None when it can."""
    if cpu.native_bf16:
        return None
    return (f"bf16 needs a CPU with native bfloat16 ({' or '.join(BF16_FLAGS)}); this one has none ({cpu.describe()}):"
            " use --precision fp32, or int8 where the bundle has it")
