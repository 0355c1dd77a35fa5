"""What this CPU is: its model name and the feature flags that decide which kernels run fast.

Read from ``/proc/cpuinfo`` once per process. Every runtime choice (the fast styles' engines,
the loss network's precision) asks here and keys its per-machine cache by these facts, since
the same code lands on AVX2-only, AVX-512 (VNNI, BF16) and AMX machines.
"""

from __future__ import annotations

from functools import cache


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (empty where it does not)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


#: Flags that decide which kernels the backends can use; the choice cache is keyed by them.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def relevant_flags() -> list[str]:
    return [flag for flag in RELEVANT_FLAGS if flag in cpu_flags()]
