"""What a machine-second costs, to report each job's cost.

Fly bills a running Machine per second by CPU kind and count plus memory. The figures below are
derived from Fly's published per-second list prices (shared-cpu-1x with 256 MB at
$0.0000008/s, with 1 GB at $0.0000022/s; performance-1x with 2 GB at $0.0000120/s, with 4 GB at
$0.0000158/s): memory costs ~$0.0000019 per GB-second, the rest is the CPU. Prices change and
differ by region and plan: set `--price-per-hour` for exact figures. Local machines cost nothing.
"""

from __future__ import annotations

from typing import Final

MEMORY_PER_GB_SECOND: Final = 0.0000019
CPU_PER_SECOND: Final = {"shared": 0.000000325, "performance": 0.0000082}


def fly_price_per_second(cpu_kind: str, cpus: int, memory_mb: int) -> float:
    cpu = CPU_PER_SECOND.get(cpu_kind, CPU_PER_SECOND["performance"])
    return cpus * cpu + memory_mb / 1024 * MEMORY_PER_GB_SECOND
