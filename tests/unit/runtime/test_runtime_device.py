"""Sampling the device: the system probe (psutil, faked here), the decode-rate meter."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import pytest

from accord.protocol.messages import Tier, Timings
from accord.protocol.pricing import DeviceState
from accord.runtime.device import RateMeter, SystemProbe


@pytest.mark.parametrize(
    ("sensor", "expected"),
    [
        (None, DeviceState()),  # no battery sensor: nothing measured, the configuration stands
        (SimpleNamespace(percent=100.0, power_plugged=True), DeviceState(battery=None)),  # mains
        (SimpleNamespace(percent=42.0, power_plugged=False), DeviceState(battery=0.42)),
    ],
)
def test_the_system_probe_reads_the_battery_of_a_device(
    monkeypatch: pytest.MonkeyPatch, sensor: object, expected: DeviceState
) -> None:
    import psutil

    monkeypatch.setattr(psutil, "sensors_battery", lambda: sensor)
    assert SystemProbe(Tier.DEVICE).sample() == expected
    assert SystemProbe(Tier.CLOUD).sample() == DeviceState()  # clouds are on mains: never asked


def test_the_rate_meter_learns_decode_rates_and_ignores_short_runs() -> None:
    meter = RateMeter(weight=0.5)
    meter.observe("m", 100, Timings(queued_ms=10, ttft_ms=90, total_ms=1_100))  # 100 tokens in 1 s
    meter.observe("m", 1, Timings(total_ms=5))  # too short to say anything
    assert meter.rates() == (("m", 100.0),)
    meter.observe("m", 100, Timings(ttft_ms=0, total_ms=500))  # 200 tokens/s: the mean moves half way
    assert meter.rates() == (("m", 150.0),)
    state = meter.state(DeviceState(battery=0.3))
    assert state == msgspec.structs.replace(DeviceState(battery=0.3), tokens_per_s=(("m", 150.0),))
    with pytest.raises(ValueError):
        RateMeter(weight=0.0)
