"""Integration fixtures: real nats-server processes started here (never one someone else started).

``nats_server`` is one JetStream-enabled server for the whole session (tests isolate themselves with unique
subjects and stream names); tests that kill or reconfigure a server start their own. At the end of the session
no nats-server started by this process may still be running.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accord.bus.server import NatsServer, live_servers


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_nats_servers() -> Iterator[None]:
    yield
    left = live_servers()
    for server in left:
        server.cleanup()
    assert not left, f"nats-server processes left running: {[s.pid for s in left]}"


@pytest.fixture(scope="session")
def nats_server(_no_leftover_nats_servers: None) -> Iterator[NatsServer]:
    server = NatsServer(name="accord-test").start()
    try:
        yield server
    finally:
        server.cleanup()
