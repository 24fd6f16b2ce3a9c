"""measure(): kWh and CO2e from CPU and wall time, per the documented model."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from worker.evidence import energy
from worker.evidence.energy import EnergyModel, EnergyReport, measure


class FakeClock:
    """Stands in for the ``time`` module inside worker.evidence.energy: pinned readings."""

    def __init__(self, cpu: list[float], wall: list[float]) -> None:
        self._cpu: Iterator[float] = iter(cpu)
        self._wall: Iterator[float] = iter(wall)

    def process_time(self) -> float:
        return next(self._cpu)

    def perf_counter(self) -> float:
        return next(self._wall)


def _burn_cpu(seconds: float) -> int:
    start = time.process_time()
    n = 0
    while time.process_time() - start < seconds:
        n += sum(i * i for i in range(1000))
    return n


def test_real_cpu_burn_is_measured_and_converted() -> None:
    # 3.6e6 W per CPU makes kWh numerically equal to CPU seconds: no rounding loss at 1e-12.
    model = EnergyModel(watts_per_cpu=3.6e6, base_watts=0.0, grid_kg_per_kwh=0.5)
    with measure(model) as report:
        _burn_cpu(0.05)
    assert report.cpu_seconds >= 0.05
    assert report.wall_seconds > 0
    assert report.kwh == pytest.approx(report.cpu_seconds * model.watts_per_cpu / 3.6e6, abs=1e-12)
    assert report.co2e_kg == pytest.approx(report.kwh * 0.5, abs=1e-12)


def test_real_cpu_burn_with_default_model() -> None:
    with measure(EnergyModel()) as report:
        _burn_cpu(0.05)
    assert report.cpu_seconds > 0
    assert report.kwh > 0
    assert report.kwh == pytest.approx(report.cpu_seconds * 15.0 / 3.6e6, abs=1e-12)


@pytest.mark.parametrize(
    ("model", "cpu_s", "wall_s", "kwh"),
    [
        (EnergyModel(watts_per_cpu=15.0, base_watts=0.0), 720.0, 1000.0, 0.003),
        (EnergyModel(watts_per_cpu=10.0, base_watts=36.0), 360.0, 100.0, 0.002),
        (EnergyModel(watts_per_cpu=0.0, base_watts=3600.0), 5.0, 3600.0, 3.6),
        (EnergyModel(), 0.0, 10.0, 0.0),
    ],
)
def test_formula_with_pinned_clocks(
    monkeypatch: pytest.MonkeyPatch, model: EnergyModel, cpu_s: float, wall_s: float, kwh: float
) -> None:
    monkeypatch.setattr(energy, "time", FakeClock(cpu=[100.0, 100.0 + cpu_s], wall=[50.0, 50.0 + wall_s]))
    with measure(model) as report:
        assert report.kwh == 0.0  # filled in on exit
    assert report.cpu_seconds == pytest.approx(cpu_s)
    assert report.wall_seconds == pytest.approx(wall_s)
    assert report.kwh == pytest.approx(kwh)
    assert report.kwh == pytest.approx((cpu_s * model.watts_per_cpu + wall_s * model.base_watts) / 3.6e6)
    assert report.co2e_kg == pytest.approx(kwh * model.grid_kg_per_kwh)


def test_report_is_filled_even_when_the_block_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "time", FakeClock(cpu=[0.0, 720.0], wall=[0.0, 1.0]))
    report: EnergyReport | None = None
    with pytest.raises(RuntimeError, match="boom"), measure(EnergyModel()) as r:
        report = r
        raise RuntimeError("boom")
    assert report is not None
    assert report.kwh == pytest.approx(0.003)


def test_method_string_records_the_parameters() -> None:
    model = EnergyModel(watts_per_cpu=12.5, base_watts=3.0, grid_kg_per_kwh=0.233)
    method = model.method()
    assert "cpu_s*12.5W" in method
    assert "wall_s*3.0W" in method
    assert "/3.6e6" in method
    assert "co2e_kg=kwh*0.233" in method
    assert "process user+sys time" in method
    assert EnergyModel().method() != method


def test_to_json_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "time", FakeClock(cpu=[1.0, 1.1234567891], wall=[2.0, 4.0]))
    model = EnergyModel(watts_per_cpu=3.6e6, grid_kg_per_kwh=1.0)
    with measure(model) as report:
        pass
    out = report.to_json()
    assert set(out) == {"cpu_seconds", "wall_seconds", "kwh", "co2e_kg", "method"}
    assert out["cpu_seconds"] == 0.123457  # rounded to microseconds
    assert out["wall_seconds"] == 2.0
    assert out["kwh"] == report.kwh
    assert out["co2e_kg"] == report.co2e_kg
    assert out["method"] == model.method()
