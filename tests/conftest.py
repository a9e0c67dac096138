"""Shared test configuration: Hypothesis profiles (``ci`` derandomised and sized for CI, ``dev`` larger,
``stateful-long`` for the reliability figure of the market's stateful test: 2,000 runs of 200 steps), and
structlog's global configuration reset after every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "print_blob": True, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, max_examples=200, **_COMMON)
settings.register_profile("dev", max_examples=2000, **_COMMON)
settings.register_profile("stateful-long", max_examples=2000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """A test that runs a CLI command in process configures structlog globally (level, renderer); without a reset
    a later test's ``capture_logs`` would see that level's filter and miss info events."""
    yield
    structlog.reset_defaults()
