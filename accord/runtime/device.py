"""Sampling the device an agent runs on: what its contractor machine prices and times bids by.

An agent shell owns a :class:`DeviceProbe` (injected: tests and simulations pass their own) and a
:class:`RateMeter` that learns each model's real decode rate from the completions it serves. Every
``sample_interval`` the shell combines the two into a :class:`~accord.protocol.pricing.DeviceState` and feeds it
to the machine as ``DeviceChanged`` when it differs from the last one; the machine re-advertises when its price
sheet moves (spec 6.7: battery premium, metered surcharge, busy refusals).

The default probe, :class:`SystemProbe`, reads the battery through psutil on agents of tier ``device`` (edge
boxes and clouds are on mains power), and leaves the link's metered flag as configured: no portable API tells a
metered link from another, so the operator says it (``metered`` in the mesh file) or injects a probe.
"""

from __future__ import annotations

from typing import Final, Protocol

import msgspec

from accord.protocol.messages import Tier, Timings
from accord.protocol.pricing import DeviceState

__all__ = ["DeviceProbe", "FixedProbe", "RateMeter", "SystemProbe"]

_MIN_DECODE_MS: Final = 20
"""Completions that decoded for less than this are too short to measure a rate from."""


class DeviceProbe(Protocol):
    """Reads the device's state now (battery, metered link); fields it cannot read stay UNSET."""

    def sample(self) -> DeviceState: ...


class FixedProbe:
    """A probe that reports what it is told (tests, simulations, operators who know better than the OS)."""

    def __init__(self, state: DeviceState | None = None) -> None:
        self.state = state if state is not None else DeviceState()

    def sample(self) -> DeviceState:
        return self.state


class SystemProbe:
    """The battery through psutil (``psutil.sensors_battery``) on a device: its charge, or None (mains) when it
    is plugged in. A machine without a battery sensor, and edge and cloud agents, report nothing (the configured
    ``battery``, if any, stands: simulations set one in the mesh file)."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier

    def sample(self) -> DeviceState:
        if self.tier is not Tier.DEVICE:
            return DeviceState()
        import psutil  # imported here: only devices pay for it

        try:
            battery = psutil.sensors_battery()
        except (OSError, RuntimeError, NotImplementedError):  # no sensor support on this platform
            return DeviceState()
        if battery is None:
            return DeviceState()
        if battery.power_plugged:
            return DeviceState(battery=None)
        return DeviceState(battery=max(0.0, min(1.0, battery.percent / 100.0)))


class RateMeter:
    """Each model's measured decode rate (output tokens per second after the first token), an exponentially
    weighted mean over the completions served (``weight`` of the newest)."""

    def __init__(self, *, weight: float = 0.3) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError("weight must be in (0, 1]")
        self.weight = weight
        self._rates: dict[str, float] = {}

    def observe(self, model: str, output_tokens: int, timings: Timings) -> None:
        """Learn from one completion: ``output_tokens`` decoded in ``total - queued - ttft`` ms."""
        decode_ms = timings.total_ms - timings.queued_ms - timings.ttft_ms
        if output_tokens < 2 or decode_ms < _MIN_DECODE_MS:
            return
        rate = output_tokens * 1000.0 / decode_ms
        old = self._rates.get(model)
        self._rates[model] = rate if old is None else old + self.weight * (rate - old)

    def rates(self) -> tuple[tuple[str, float], ...]:
        """(model, tokens/s) for every model measured so far, rounded to 3 significant digits (a sheet that moves
        by less is not worth a new advert)."""
        return tuple((model, float(f"{rate:.3g}")) for model, rate in sorted(self._rates.items()))

    def state(self, probed: DeviceState) -> DeviceState:
        """``probed`` with the measured rates."""
        return msgspec.structs.replace(probed, tokens_per_s=self.rates())
