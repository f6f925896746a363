"""The admission policy over fake /proc and cgroup files: pure logic, no Docker."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.capacity import Capacity, HostMeter
from gateway.settings import Settings

MIB = 1 << 20


def fake_proc(root: Path, *, available_mib: int, total_mib: int = 4096, pressure: float | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "meminfo").write_text(f"MemTotal:       {total_mib * 1024} kB\nMemFree:        1 kB\n"
                                  f"MemAvailable:   {available_mib * 1024} kB\n")
    if pressure is not None:
        (root / "pressure").mkdir(exist_ok=True)
        (root / "pressure" / "cpu").write_text(f"some avg10={pressure:.2f} avg60=1.00 avg300=1.00 total=1\n"
                                               "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    return root


def policy(proc: Path, *, cgroup: Path | None = None, cpu_limit: float = 90.0, cap: int = 0) -> Capacity:
    return Capacity(HostMeter(proc=proc, cgroup=cgroup), reserve=1024 * MIB, per_sandbox=64 * MIB,
                    cpu_pressure_limit=cpu_limit, max_sandboxes=cap)


def test_memory_admits_while_the_free_memory_stays_above_the_reserve(tmp_path: Path) -> None:
    capacity = policy(fake_proc(tmp_path, available_mib=1024 + 64 * 3))

    assert capacity.refusal(live=100) is None  # the count does not matter, the memory does
    assert capacity.refusal(live=100, starting=2) is None  # room for two starting ones and this one
    refused = capacity.refusal(live=100, starting=3)
    assert refused is not None and refused.evicting_helps and "memory" in refused.reason
    assert not capacity.short_of_memory()


def test_under_the_reserve_memory_is_short(tmp_path: Path) -> None:
    capacity = policy(fake_proc(tmp_path, available_mib=1000))

    assert capacity.short_of_memory()
    assert capacity.refusal(live=0) is not None


def test_cpu_pressure_refuses_and_evicting_would_not_help(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, available_mib=8192, pressure=97.0)

    refused = policy(proc).refusal(live=1)

    assert refused is not None and not refused.evicting_helps and "97 %" in refused.reason
    assert policy(proc, cpu_limit=0).refusal(live=1) is None  # 0 turns the check off
    assert policy(fake_proc(tmp_path / "calm", available_mib=8192, pressure=10)).refusal(live=1) is None
    assert policy(fake_proc(tmp_path / "no-psi", available_mib=8192)).refusal(live=1) is None


def test_the_hard_cap_still_applies(tmp_path: Path) -> None:
    capacity = policy(fake_proc(tmp_path, available_mib=8192), cap=2)

    assert capacity.refusal(live=1) is None
    refused = capacity.refusal(live=2)
    assert refused is not None and refused.evicting_helps and "CODEINTERP_MAX_SANDBOXES" in refused.reason


@pytest.mark.parametrize(("files", "expected_mib"), [
    ({"memory.max": str(1536 * MIB), "memory.current": str(512 * MIB)}, 1024),  # v2: the cgroup is tighter
    ({"memory.limit_in_bytes": str(3072 * MIB), "memory.usage_in_bytes": str(512 * MIB)}, 2560),  # v1
    ({"memory.max": "max", "memory.current": "1"}, 4000),  # no limit: MemAvailable alone
    ({"memory.limit_in_bytes": str((1 << 63) - 4096), "memory.usage_in_bytes": "1"}, 4000),  # v1 "no limit"
    ({}, 4000),  # not a memory cgroup: ignored
])
def test_a_sandbox_cgroup_bounds_the_free_memory(tmp_path: Path, files: dict[str, str], expected_mib: int) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    for name, value in files.items():
        (cgroup / name).write_text(value + "\n")
    meter = HostMeter(proc=fake_proc(tmp_path / "proc", available_mib=4000), cgroup=cgroup)

    assert meter.free_memory() == expected_mib * MIB


def test_settings_default_reserve_and_sizes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.reserve_bytes(24 << 30) == (24 << 30) // 10
    assert settings.reserve_bytes(1 << 30) == 512 * MIB
    assert Settings(data_dir=tmp_path, memory_reserve="2g").reserve_bytes(24 << 30) == 2 << 30
    with pytest.raises(ValidationError, match="memory_reserve"):
        Settings(data_dir=tmp_path, memory_reserve="lots")
