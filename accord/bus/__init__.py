"""The Bus port and its implementations: NatsBus (nats-py, JetStream), MemoryBus, FaultyBus; nats-server runner.

``accord.bus.nats`` (the only module importing nats-py) and ``accord.bus.server`` (processes) are imported
lazily through this package's attributes, so that ``import accord.bus`` stays cheap for in-process use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accord.bus.base import (
    DEFAULT_MAX_PENDING,
    Bus,
    BusClosedError,
    BusError,
    BusMessage,
    BusStats,
    BusTimeoutError,
    ConflictError,
    ConnectError,
    DirectBus,
    DisconnectedError,
    DurableAck,
    DurableConsumer,
    DurableMessage,
    EndpointCounts,
    InvalidSubjectError,
    KeyValue,
    KVEntry,
    NoRespondersError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceEndpoint,
    ServiceHandle,
    ServiceHost,
    ServiceStatsFn,
    SlowConsumerError,
    StreamState,
    Subscription,
    check_subject,
    subject_matches,
)
from accord.bus.faulty import FaultEvent, FaultPlan, FaultRates, FaultyBus
from accord.bus.fencing import Claim, FencedError, claim, ensure_current, read_claim
from accord.bus.memory import MemoryBroker, MemoryBus

if TYPE_CHECKING:
    from accord.bus.nats import NatsBus
    from accord.bus.server import NatsCluster, NatsServer, NkeyUser

__all__ = [
    "DEFAULT_MAX_PENDING",
    "Bus",
    "BusClosedError",
    "BusError",
    "BusMessage",
    "BusStats",
    "BusTimeoutError",
    "Claim",
    "ConflictError",
    "ConnectError",
    "DirectBus",
    "DisconnectedError",
    "DurableAck",
    "DurableConsumer",
    "DurableMessage",
    "EndpointCounts",
    "FaultEvent",
    "FaultPlan",
    "FaultRates",
    "FaultyBus",
    "FencedError",
    "InvalidSubjectError",
    "KVEntry",
    "KeyValue",
    "MemoryBroker",
    "MemoryBus",
    "NatsBus",
    "NatsCluster",
    "NatsServer",
    "NkeyUser",
    "NoRespondersError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ServiceEndpoint",
    "ServiceHandle",
    "ServiceHost",
    "ServiceStatsFn",
    "SlowConsumerError",
    "StreamState",
    "Subscription",
    "check_subject",
    "claim",
    "ensure_current",
    "read_claim",
    "subject_matches",
]

_LAZY = {
    "NatsBus": "accord.bus.nats",
    "NatsServer": "accord.bus.server",
    "NatsCluster": "accord.bus.server",
    "NkeyUser": "accord.bus.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'accord.bus' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
