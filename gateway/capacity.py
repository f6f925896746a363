"""Room for sandboxes, measured: free memory and CPU pressure on this host, not a fixed count.

A new sandbox is admitted while the free memory, less what it and every sandbox still starting are
expected to take, stays above a reserve, and while the CPUs are not saturated. Free memory is the
kernel's MemAvailable and, when a cgroup that holds the sandboxes is named, that cgroup's limit less
its usage (the smaller of the two). CPU pressure is /proc/pressure/cpu's "some avg10": the share of
the last ten seconds in which some runnable task waited for a CPU. Each sandbox keeps its own cgroup
memory limit; this decides only how many run at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Capacity", "HostMeter", "Refusal"]

log = logging.getLogger("codeinterp.gateway")
_NO_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a huge number near 2**63


class HostMeter:
    """Reads this host's free memory and CPU pressure from /proc (and a cgroup, when given)."""

    def __init__(self, *, proc: Path = Path("/proc"), cgroup: Path | None = None) -> None:
        self.proc, self.cgroup = proc, cgroup

    def total_memory(self) -> int:
        return self._meminfo().get("MemTotal", 0)

    def free_memory(self) -> int:
        """Bytes that can be taken without swapping: MemAvailable, bounded by the cgroup's room."""
        info = self._meminfo()
        free = info.get("MemAvailable", info.get("MemFree", 0))
        room = self._cgroup_room()
        return free if room is None else min(free, room)

    def cpu_pressure(self) -> float | None:
        """Percent of the last 10 s in which some task waited for a CPU; None without PSI."""
        try:
            text = (self.proc / "pressure" / "cpu").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("some "):
                fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
                try:
                    return float(fields["avg10"])
                except (KeyError, ValueError):
                    return None
        return None

    def _meminfo(self) -> dict[str, int]:
        values: dict[str, int] = {}
        try:
            text = (self.proc / "meminfo").read_text()
        except OSError:
            return values
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
        return values

    def _cgroup_room(self) -> int | None:
        """The cgroup's limit less its usage (v2 memory.max/current, v1 limit_in_bytes/usage_in_bytes)."""
        if self.cgroup is None:
            return None
        for limit_name, usage_name in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            try:
                limit = (self.cgroup / limit_name).read_text().strip()
                usage = int((self.cgroup / usage_name).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit == "max" or not limit.isdigit() or int(limit) >= _NO_LIMIT:
                return None
            return max(0, int(limit) - usage)
        log.warning("no memory figures in the sandbox cgroup", extra={"cgroup": str(self.cgroup)})
        return None


@dataclass(frozen=True)
class Refusal:
    """Why a new sandbox does not fit now; ``evicting_helps`` when freeing idle sandboxes can make room."""

    reason: str
    evicting_helps: bool


class Capacity:
    """The admission policy over a meter: see the module docstring and README's "Capacity"."""

    def __init__(self, meter: HostMeter, *, reserve: int, per_sandbox: int, cpu_pressure_limit: float,
                 max_sandboxes: int) -> None:
        self.meter = meter
        self.reserve = reserve
        self.per_sandbox = per_sandbox
        self.cpu_pressure_limit = cpu_pressure_limit
        self.max_sandboxes = max_sandboxes  # 0: no count limit

    def refusal(self, live: int, starting: int = 0) -> Refusal | None:
        """None when one more sandbox fits beside ``live`` ones (``starting`` of them not yet measured)."""
        if self.max_sandboxes and live >= self.max_sandboxes:
            return Refusal(f"all {self.max_sandboxes} sandboxes allowed (CODEINTERP_MAX_SANDBOXES) are in use",
                           evicting_helps=True)
        free = self.meter.free_memory()
        needed = self.reserve + (starting + 1) * self.per_sandbox
        if free < needed:
            return Refusal(f"the host has {free >> 20} MiB of memory free and keeps {self.reserve >> 20} MiB "
                           "in reserve", evicting_helps=True)
        if self.cpu_pressure_limit > 0:
            pressure = self.meter.cpu_pressure()
            if pressure is not None and pressure > self.cpu_pressure_limit:
                return Refusal(f"the CPUs are saturated (pressure {pressure:.0f} %)", evicting_helps=False)
        return None

    def short_of_memory(self) -> bool:
        """True while the free memory is under the reserve: idle sandboxes should go."""
        return self.meter.free_memory() < self.reserve

    def report(self, live: int) -> dict[str, object]:
        """For /healthz."""
        return {"live": live, "max": self.max_sandboxes or None, "memory_free": self.meter.free_memory(),
                "memory_reserve": self.reserve, "cpu_pressure": self.meter.cpu_pressure()}
