"""The Bus port: what the runtime needs from a message bus, and the value and error types it speaks.

Three implementations share this contract (and one test suite): :class:`~accord.bus.nats.NatsBus` (a real NATS
server, JetStream for durable streams and KV), :class:`~accord.bus.memory.MemoryBus` (in-process, anyio) and
:class:`~accord.bus.faulty.FaultyBus` (wraps either one and injects seeded faults).

Semantics every implementation keeps (spec/PROTOCOL.md section 11):

- Core publish is at most once. Messages from one publisher on one subject reach a subscriber in publish order.
- A queue group delivers each message to exactly one of its members; plain subscribers each get a copy.
- Every subscription has a bounded buffer (``max_pending`` messages). A message that finds it full is dropped,
  counted in ``Subscription.dropped`` and ``BusStats.dropped``; nothing buffers without limit.
- ``request`` raises :class:`NoRespondersError` when nobody listens and :class:`BusTimeoutError` when nobody
  answers in time. Durations are integer milliseconds (``*_ms``), as everywhere in Accord.
- Durable publishes carry a message id; a repeat of the same id within the stream's duplicate window is
  acknowledged as a duplicate and stored once.
- KV writes are compare-and-set on the key's revision; a lost race raises :class:`ConflictError`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Final, Protocol, Self, runtime_checkable

import msgspec

from accord.errors import AccordError

__all__ = [
    "DEFAULT_MAX_PENDING",
    "Bus",
    "BusClosedError",
    "BusError",
    "BusMessage",
    "BusStats",
    "BusTimeoutError",
    "ConflictError",
    "ConnectError",
    "DirectBus",
    "DisconnectedError",
    "DurableAck",
    "DurableConsumer",
    "DurableMessage",
    "EndpointCounts",
    "InvalidSubjectError",
    "KVEntry",
    "KeyValue",
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
    "subject_matches",
]

DEFAULT_MAX_PENDING: Final = 4096
"""Messages a subscription buffers before it drops (and counts) the next one."""


# --- errors ------------------------------------------------------------------------------------------------------
class BusError(AccordError):
    """A bus operation failed. ``reason`` is a stable token to branch on; the text is for humans."""

    reason: ClassVar[str] = "other"

    def __init__(self, detail: str = "", *, subject: str | None = None) -> None:
        self.detail = detail
        self.subject = subject
        text = self.reason if not detail else f"{self.reason}: {detail}"
        super().__init__(text if subject is None else f"{text} (subject {subject!r})")


class BusTimeoutError(BusError):
    reason = "timeout"


class NoRespondersError(BusError):
    reason = "no_responders"


class DisconnectedError(BusError):
    """Not connected and the (bounded) reconnect buffer cannot take the message: fail fast, never pile up."""

    reason = "disconnected"


class ConnectError(BusError):
    reason = "connect_failed"


class PermissionDeniedError(BusError):
    """The server refused a publish or subscribe under this connection's permissions."""

    reason = "permission_denied"


class ConflictError(BusError):
    """A compare-and-set lost: the key exists (create) or its revision moved on (update)."""

    reason = "conflict"


class BusClosedError(BusError):
    reason = "closed"


class SlowConsumerError(BusError):
    """Not raised by the buses themselves (a full buffer drops and counts, see ``Subscription.dropped``); for
    callers that treat drops as fatal and want the shared reason code."""

    reason = "slow_consumer"


class NotFoundError(BusError):
    """A stream, consumer, bucket or message does not exist."""

    reason = "not_found"


class InvalidSubjectError(BusError):
    reason = "invalid_subject"


class PayloadTooLargeError(BusError):
    reason = "payload_too_large"


# --- values ------------------------------------------------------------------------------------------------------
class BusMessage(msgspec.Struct, frozen=True, gc=False):
    """One delivered message. ``headers`` is None when the message had none; ``reply`` None when no reply."""

    subject: str
    data: bytes
    headers: Mapping[str, str] | None = None
    reply: str | None = None


@dataclass(slots=True)
class BusStats:
    """Counters of one bus connection (monotonic; read them, never reset them)."""

    published: int = 0
    delivered: int = 0
    dropped: int = 0
    """Messages thrown away because a subscription's buffer was full (slow consumer)."""
    reconnects: int = 0
    """Counted when the client library reports the reconnect, after its first round trip on the new server:
    traffic can already flow a moment before the count moves."""
    disconnects: int = 0
    permission_denied: int = 0
    errors: int = 0
    """Asynchronous errors reported by the client library that fit no other counter."""
    last_recovery_ms: int = 0
    """How long the last disconnection lasted, until the reconnect (0 before the first one)."""


class DurableAck(msgspec.Struct, frozen=True):
    """The stream's acknowledgement of a durable publish: stored at ``seq`` (or already there, ``duplicate``)."""

    stream: str
    seq: int
    duplicate: bool = False


class StreamState(msgspec.Struct, frozen=True):
    name: str
    messages: int
    first_seq: int
    last_seq: int


class KVEntry(msgspec.Struct, frozen=True):
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """One endpoint a service shows to NATS service tooling (``$SRV.INFO``): a name and the subject it serves.

    Informational: the bus does not subscribe to ``subject`` for it (the owner already does, in its own way);
    the endpoint's counts come from the owner's ``stats`` callback.
    """

    name: str
    subject: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndpointCounts:
    """What ``$SRV.STATS`` reports for one endpoint: requests handled, errors, the last error, time spent."""

    requests: int = 0
    errors: int = 0
    last_error: str = ""
    processing_ns: int = 0
    data: Mapping[str, int | float | str] | None = None


ServiceStatsFn = Callable[[], Mapping[str, EndpointCounts]]
"""Called on every ``$SRV.STATS`` request: endpoint name -> its counts now."""


# --- ports -------------------------------------------------------------------------------------------------------
@runtime_checkable
class Subscription(Protocol):
    """Interest in a subject; an async iterator of :class:`BusMessage` that ends when unsubscribed or closed.

    ``async with sub:`` unsubscribes on exit. Messages still buffered at unsubscribe are discarded.
    """

    @property
    def subject(self) -> str: ...

    @property
    def queue(self) -> str | None: ...

    @property
    def max_pending(self) -> int: ...

    @property
    def pending(self) -> int:
        """Messages buffered now, not yet taken."""
        ...

    @property
    def dropped(self) -> int:
        """Messages thrown away because the buffer was full."""
        ...

    def __aiter__(self) -> AsyncIterator[BusMessage]: ...

    async def __anext__(self) -> BusMessage: ...

    async def next(self, *, timeout_ms: int | None = None) -> BusMessage:
        """The next message; BusTimeoutError after ``timeout_ms``, BusClosedError once unsubscribed/closed."""
        ...

    async def unsubscribe(self) -> None:
        """Remove interest; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@runtime_checkable
class DurableMessage(Protocol):
    """A message read from a stream through a durable consumer; ack it once handled or it comes back."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str] | None: ...

    @property
    def stream_seq(self) -> int: ...

    @property
    def deliveries(self) -> int:
        """1 on first delivery, more on redelivery."""
        ...

    async def ack(self) -> None: ...

    async def nak(self) -> None:
        """Ask for redelivery now."""
        ...


@runtime_checkable
class DurableConsumer(Protocol):
    """A named pull consumer on a stream; its position survives reconnects (and, on NATS, server restarts)."""

    @property
    def name(self) -> str: ...

    async def fetch(self, batch: int = 1, *, timeout_ms: int = 1000) -> list[DurableMessage]:
        """Up to ``batch`` messages; fewer (maybe none) if ``timeout_ms`` passes first. Never raises a timeout."""
        ...

    async def close(self) -> None:
        """Stop using the consumer locally; its durable state stays on the server."""
        ...


@runtime_checkable
class KeyValue(Protocol):
    """A bucket of keys with compare-and-set on revisions (JetStream KV on NATS)."""

    @property
    def bucket(self) -> str: ...

    async def get(self, key: str) -> KVEntry | None:
        """The current entry, or None if the key was never written or is deleted."""
        ...

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key does not exist; its revision. ConflictError if it does."""
        ...

    async def update(self, key: str, value: bytes, *, last_revision: int) -> int:
        """Write only if the key is still at ``last_revision``; the new revision. ConflictError otherwise."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Unconditional write; the new revision."""
        ...

    async def delete(self, key: str) -> None: ...


@runtime_checkable
class Bus(Protocol):
    """The message bus port. Use as ``async with bus:``; ``close()`` drains and is idempotent."""

    @property
    def stats(self) -> BusStats: ...

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        reply: str | None = None,
    ) -> None:
        """At-most-once publish. DisconnectedError (not a silent queue) while disconnected past the buffer."""
        ...

    async def subscribe(
        self, subject: str, *, queue: str | None = None, max_pending: int = DEFAULT_MAX_PENDING
    ) -> Subscription:
        """Interest in ``subject`` (wildcards allowed), in queue group ``queue`` if given.

        Returns once the interest is registered (a publish after it is delivered); PermissionDeniedError if the
        server refuses it.
        """
        ...

    async def request(
        self, subject: str, data: bytes, *, timeout_ms: int, headers: Mapping[str, str] | None = None
    ) -> BusMessage:
        """Publish with a fresh reply subject and wait for the first answer."""
        ...

    async def flush(self, *, timeout_ms: int = 2000) -> None:
        """Wait until everything published so far reached the server (a round trip).

        Raises PermissionDeniedError for publishes the server refused since the last flush.
        """
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    # --- durable streams (JetStream) --------------------------------------------------------------------------
    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        duplicate_window_ms: int = 120_000,
        max_age_ms: int = 0,
        replicas: int = 1,
    ) -> None:
        """Create the stream, or update it to this configuration if it exists."""
        ...

    async def stream_state(self, name: str) -> StreamState: ...

    async def publish_durable(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 2000,
    ) -> DurableAck:
        """Store in the stream that captures ``subject``; a repeat ``msg_id`` in the window is a duplicate."""
        ...

    async def durable_consumer(
        self,
        stream: str,
        name: str,
        *,
        filter_subject: str | None = None,
        ack_wait_ms: int = 30_000,
    ) -> DurableConsumer:
        """Create or bind the named durable pull consumer (delivering from the start of the stream)."""
        ...

    async def key_value(self, bucket: str, *, history: int = 1, replicas: int = 1) -> KeyValue:
        """Create or bind a KV bucket."""
        ...


@runtime_checkable
class ServiceHandle(Protocol):
    """A running service registration; ``stop()`` removes it (idempotent)."""

    @property
    def id(self) -> str: ...

    async def stop(self) -> None: ...


@runtime_checkable
class ServiceHost(Protocol):
    """A bus that can answer the NATS service protocol (PING, INFO, STATS on ``$SRV.*``) for its owner.

    Optional: a caller checks ``isinstance(bus, ServiceHost)``. ``name`` is the service kind (shared by every
    instance, e.g. ``accord-agent``), ``version`` a semantic version; ``metadata`` identifies the instance.
    """

    async def add_service(
        self,
        name: str,
        version: str,
        *,
        description: str = "",
        metadata: Mapping[str, str] | None = None,
        endpoints: Sequence[ServiceEndpoint] = (),
        stats: ServiceStatsFn | None = None,
        on_ping: Callable[[], None] | None = None,
    ) -> ServiceHandle: ...


@runtime_checkable
class DirectBus(Protocol):
    """A bus that hands messages to a synchronous handler as its connection reads them, and takes publishes
    synchronously (NatsBus). Optional: a caller checks ``isinstance(bus, DirectBus)``.

    The shells use it to handle a frame and send what it causes with no queue and no task switch in between;
    buses without it are read through ``subscribe``.
    """

    async def listen(
        self, subject: str, handler: Callable[[BusMessage], None], *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> Subscription:
        """Subscribe, calling ``handler`` with each message as soon as it is read, in order. The handler runs in
        the connection's read loop: it must not block, and what it raises is logged and dropped (it never stops
        the connection). The subscription only ends the delivery (``unsubscribe``, ``async with``); iterating it
        yields nothing.

        Flow control: nothing is queued in this process, so ``max_pending`` only bounds what arrives before the
        handoff. A handler slower than the traffic slows the connection's reads, and the backlog waits at the
        server, whose per-connection limit (its slow-consumer rule) applies in place of a client-side drop."""
        ...

    def publish_nowait(self, subject: str, data: bytes) -> bool:
        """Queue a plain publish if the bus can take it now without waiting (it goes out in publish order with
        every other publish); False when the caller must ``await publish`` instead (disconnected, buffer full)."""
        ...


# --- subjects ----------------------------------------------------------------------------------------------------
_BAD_CHARS: Final = re.compile(r"[\s]")


def check_subject(subject: str, *, wildcards: bool) -> str:
    """Return ``subject`` if NATS would accept it, else raise InvalidSubjectError.

    Tokens are non-empty and separated by dots, no whitespace; with ``wildcards`` a token may be ``*`` and the
    last token may be ``>``; without, neither may appear (a publish subject is always literal).
    """
    if not subject or _BAD_CHARS.search(subject):
        raise InvalidSubjectError("empty or contains whitespace", subject=subject)
    tokens = subject.split(".")
    last = len(tokens) - 1
    for i, tok in enumerate(tokens):
        if not tok:
            raise InvalidSubjectError("empty token", subject=subject)
        if tok == "*" or (tok == ">" and i == last):
            if not wildcards:
                raise InvalidSubjectError("wildcard in a literal subject", subject=subject)
        elif "*" in tok or ">" in tok:
            raise InvalidSubjectError("misplaced wildcard", subject=subject)
    return subject


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` matches one token, a final ``>`` one or more."""
    if pattern == subject:
        return True
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
