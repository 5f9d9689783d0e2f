"""The machine figures are measured on: CPU model, cores and the SIMD flags that decide int8/bf16 speed."""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optkit.types.records import CpuInfo

# the flags that change which precision is fast: int8 dot products (VNNI, AMX), native bf16 and fp16
SIMD_FLAGS = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16",
              "avx512_fp16", "f16c"}


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields.items()}


def cpu_flags() -> set[str]:
    """All flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    fields = _cpuinfo()
    return set(fields.get("flags", "").split()) if fields else set()


def int8_dot_product(flags: set[str]) -> bool:
    """VNNI or AMX: u8 x s8 dot products without the 16-bit saturation older AVX2/AVX-512 kernels have."""
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def native_bf16(flags: set[str]) -> bool:
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_info() -> CpuInfo:
    """The CPU the figures were measured on: model name, cores, and the SIMD flags that decide int8 speed."""
    from optkit.types.records import CpuInfo

    fields = _cpuinfo()
    if fields is None:
        return CpuInfo(machine=platform.machine(), logical_cores=os.cpu_count(),
                       model=platform.processor() or "unknown")
    return CpuInfo(machine=platform.machine(), logical_cores=os.cpu_count(),
                   model=fields.get("model name", platform.processor() or "unknown"),
                   simd=sorted(cpu_flags() & SIMD_FLAGS))
