"""Energy and carbon of a run, from measured CPU and wall time.

Method (recorded beside the figures so they can be recomputed):
    kWh     = (cpu_seconds * watts_per_cpu + wall_seconds * base_watts) / 3.6e6
    kg CO2e = kWh * grid_kg_per_kwh
CPU time is the process's user+system time over the run (``time.process_time``),
so concurrent runs in one process share the attribution; the method string says
so. Defaults: 15 W per busy CPU, 0 W base, 0.4 kg CO2e/kWh; all configurable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["EnergyModel", "EnergyReport", "measure"]


@dataclass(frozen=True)
class EnergyModel:
    watts_per_cpu: float = 15.0
    base_watts: float = 0.0
    grid_kg_per_kwh: float = 0.4

    def method(self) -> str:
        return (
            f"kwh=(cpu_s*{self.watts_per_cpu}W+wall_s*{self.base_watts}W)/3.6e6; "
            f"co2e_kg=kwh*{self.grid_kg_per_kwh}; cpu_s=process user+sys time during the run"
        )


@dataclass
class EnergyReport:
    model: EnergyModel
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    kwh: float = 0.0
    co2e_kg: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "cpu_seconds": round(self.cpu_seconds, 6),
            "wall_seconds": round(self.wall_seconds, 6),
            "kwh": self.kwh,
            "co2e_kg": self.co2e_kg,
            "method": self.model.method(),
        }


@contextmanager
def measure(model: EnergyModel) -> Iterator[EnergyReport]:
    report = EnergyReport(model)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        yield report
    finally:
        report.cpu_seconds = time.process_time() - cpu0
        report.wall_seconds = time.perf_counter() - wall0
        joules = report.cpu_seconds * model.watts_per_cpu + report.wall_seconds * model.base_watts
        report.kwh = round(joules / 3.6e6, 12)
        report.co2e_kg = round(report.kwh * model.grid_kg_per_kwh, 12)
