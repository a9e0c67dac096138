"""MemoryBus: the Bus port inside one process, with NATS semantics and no server (anyio only).

A :class:`MemoryBroker` plays the server: every :class:`MemoryBus` attached to the same broker is one
"connection" to it, so several agents in one process (or one test) talk as they would over NATS: wildcard
subjects, queue groups (one member per message, chosen by the broker's seeded random), request/reply with
no-responders detection, bounded subscription buffers that drop and count, header passthrough, and in-memory
stand-ins for JetStream streams (Msg-Id de-duplication window, durable pull consumers with ack/redelivery) and
KV buckets (compare-and-set on revisions).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import anyio

from accord.bus.base import (
    DEFAULT_MAX_PENDING,
    BusClosedError,
    BusMessage,
    BusStats,
    BusTimeoutError,
    ConflictError,
    DurableAck,
    DurableMessage,
    KVEntry,
    NoRespondersError,
    NotFoundError,
    PayloadTooLargeError,
    StreamState,
    check_subject,
    subject_matches,
)
from accord.bus.subscription import SubscriptionBase

__all__ = ["MemoryBroker", "MemoryBus"]

MAX_PAYLOAD = 1 << 20  # as nats-server's default max_payload


class MemoryBroker:
    """The in-process "server" shared by MemoryBus connections. ``seed`` fixes queue-group choices."""

    def __init__(self, *, seed: int | None = None, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._rng = random.Random(seed)
        self._subs: list[_MemorySubscription] = []
        self._route_cache: dict[str, list[_MemorySubscription]] = {}
        self._streams: dict[str, _Stream] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._inbox = 0

    def bus(self) -> MemoryBus:
        """A new connection to this broker."""
        return MemoryBus(self)

    # --- routing -------------------------------------------------------------------------------------------------
    def _add(self, sub: _MemorySubscription) -> None:
        self._subs.append(sub)
        self._route_cache.clear()

    def _remove(self, sub: _MemorySubscription) -> None:
        try:
            self._subs.remove(sub)
        except ValueError:
            return
        self._route_cache.clear()

    def _route(self, msg: BusMessage) -> int:
        """Deliver to every plain match and to one member per queue group; returns how many were targeted."""
        matched = self._route_cache.get(msg.subject)
        if matched is None:
            matched = [s for s in self._subs if subject_matches(s.subject, msg.subject)]
            if len(self._route_cache) > 4096:
                self._route_cache.clear()
            self._route_cache[msg.subject] = matched
        groups: dict[tuple[str, str], list[_MemorySubscription]] | None = None
        for sub in matched:
            if sub.queue is None:
                sub._offer(msg)
            else:
                if groups is None:
                    groups = {}
                groups.setdefault((sub.subject, sub.queue), []).append(sub)
        if groups:
            for members in groups.values():
                members[self._rng.randrange(len(members))]._offer(msg)
        return len(matched)

    def _next_inbox(self) -> str:
        self._inbox += 1
        return f"_INBOX.mem.{self._inbox}"


class _MemorySubscription(SubscriptionBase):
    """A bounded deque the broker appends to; a reader with nothing to take waits on an event."""

    __slots__ = ("_buf", "_bus", "_waiter")

    def __init__(self, bus: MemoryBus, subject: str, queue: str | None, max_pending: int) -> None:
        super().__init__(subject, queue, max_pending)
        self._bus = bus
        self._buf: deque[BusMessage] = deque()
        self._waiter: anyio.Event | None = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _offer(self, msg: BusMessage) -> None:
        if self._closed:
            return
        if len(self._buf) >= self._max_pending:
            self._dropped += 1
            self._bus.stats.dropped += 1
            return
        self._buf.append(msg)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    def _poll(self) -> BusMessage | None:
        if self._buf and not self._closed:
            self._bus.stats.delivered += 1
            return self._buf.popleft()
        return None

    async def _wait(self) -> BusMessage:
        while not self._closed:
            msg = self._poll()
            if msg is not None:
                return msg
            waiter = self._waiter = anyio.Event()
            await waiter.wait()
        raise BusClosedError(subject=self._subject)

    def _discard(self) -> None:
        self._buf.clear()
        self._wake()

    async def _remove_interest(self) -> None:
        self._bus._broker._remove(self)
        self._bus._subs.discard(self)


# --- durable streams ---------------------------------------------------------------------------------------------
class _Stored:
    __slots__ = ("data", "headers", "seq", "subject")

    def __init__(self, seq: int, subject: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        self.seq = seq
        self.subject = subject
        self.data = data
        self.headers = headers


class _Stream:
    def __init__(self, name: str, subjects: Sequence[str], duplicate_window_ms: int) -> None:
        self.name = name
        self.subjects = list(subjects)
        self.duplicate_window_ms = duplicate_window_ms
        self.messages: dict[int, _Stored] = {}
        self.last_seq = 0
        self.dedupe: dict[str, tuple[int, float]] = {}
        self.consumers: dict[str, _Consumer] = {}
        self.changed = anyio.Event()

    def captures(self, subject: str) -> bool:
        return any(subject_matches(p, subject) for p in self.subjects)

    def store(self, subject: str, data: bytes, headers: Mapping[str, str] | None, msg_id: str) -> DurableAck:
        now = time.monotonic()
        window = self.duplicate_window_ms / 1000
        if len(self.dedupe) > 1024:
            self.dedupe = {k: v for k, v in self.dedupe.items() if now - v[1] < window}
        seen = self.dedupe.get(msg_id)
        if seen is not None and now - seen[1] < window:
            return DurableAck(stream=self.name, seq=seen[0], duplicate=True)
        self.last_seq += 1
        self.messages[self.last_seq] = _Stored(self.last_seq, subject, data, headers)
        self.dedupe[msg_id] = (self.last_seq, now)
        changed, self.changed = self.changed, anyio.Event()
        changed.set()
        return DurableAck(stream=self.name, seq=self.last_seq)


class _Consumer:
    def __init__(self, stream: _Stream, name: str, filter_subject: str | None, ack_wait_ms: int) -> None:
        self.stream = stream
        self.name = name
        self.filter_subject = filter_subject
        self.ack_wait = ack_wait_ms / 1000
        self.next_seq = 1
        self.unacked: dict[int, tuple[float, int]] = {}  # seq -> (redeliver at, deliveries)

    def _take(self, batch: int) -> list[DurableMessage]:
        out: list[DurableMessage] = []
        now = time.monotonic()
        for seq in sorted(self.unacked):
            if len(out) >= batch:
                return out
            due, n = self.unacked[seq]
            stored = self.stream.messages.get(seq)
            if stored is None:
                del self.unacked[seq]
            elif due <= now:
                self.unacked[seq] = (now + self.ack_wait, n + 1)
                out.append(_MemoryDurableMessage(self, stored, n + 1))
        while len(out) < batch and self.next_seq <= self.stream.last_seq:
            seq = self.next_seq
            self.next_seq += 1
            stored = self.stream.messages.get(seq)
            if stored is None or (
                self.filter_subject is not None and not subject_matches(self.filter_subject, stored.subject)
            ):
                continue
            self.unacked[seq] = (now + self.ack_wait, 1)
            out.append(_MemoryDurableMessage(self, stored, 1))
        return out


class _MemoryDurableMessage:
    __slots__ = ("_consumer", "data", "deliveries", "headers", "stream_seq", "subject")

    def __init__(self, consumer: _Consumer, stored: _Stored, deliveries: int) -> None:
        self._consumer = consumer
        self.subject = stored.subject
        self.data = stored.data
        self.headers = stored.headers
        self.stream_seq = stored.seq
        self.deliveries = deliveries

    async def ack(self) -> None:
        self._consumer.unacked.pop(self.stream_seq, None)

    async def nak(self) -> None:
        if self.stream_seq in self._consumer.unacked:
            self._consumer.unacked[self.stream_seq] = (0.0, self.deliveries)


class _MemoryConsumerHandle:
    def __init__(self, bus: MemoryBus, consumer: _Consumer) -> None:
        self._bus = bus
        self._consumer = consumer

    @property
    def name(self) -> str:
        return self._consumer.name

    async def fetch(self, batch: int = 1, *, timeout_ms: int = 1000) -> list[DurableMessage]:
        self._bus._check_open()
        deadline = anyio.current_time() + timeout_ms / 1000
        while True:
            out = self._consumer._take(batch)
            if out:
                return out
            left = deadline - anyio.current_time()
            if left <= 0:
                return out
            # Wake on a new message, or in time for the earliest redelivery.
            if self._consumer.unacked:
                left = min(left, max(0.0, min(d for d, _ in self._consumer.unacked.values()) - time.monotonic()))
            with anyio.move_on_after(left):
                await self._consumer.stream.changed.wait()

    async def close(self) -> None:
        return None


# --- KV ----------------------------------------------------------------------------------------------------------
class _Bucket:
    def __init__(self, name: str) -> None:
        self.name = name
        self.revision = 0
        self.entries: dict[str, KVEntry] = {}


class _MemoryKV:
    def __init__(self, bus: MemoryBus, bucket: _Bucket) -> None:
        self._bus = bus
        self._b = bucket

    @property
    def bucket(self) -> str:
        return self._b.name

    def _write(self, key: str, value: bytes) -> int:
        check_subject(key, wildcards=False)
        self._b.revision += 1
        self._b.entries[key] = KVEntry(key=key, value=value, revision=self._b.revision)
        return self._b.revision

    async def get(self, key: str) -> KVEntry | None:
        self._bus._check_open()
        return self._b.entries.get(key)

    async def create(self, key: str, value: bytes) -> int:
        self._bus._check_open()
        if key in self._b.entries:
            raise ConflictError(f"key {key!r} exists", subject=key)
        return self._write(key, value)

    async def update(self, key: str, value: bytes, *, last_revision: int) -> int:
        self._bus._check_open()
        cur = self._b.entries.get(key)
        if (cur.revision if cur is not None else 0) != last_revision:
            raise ConflictError(f"key {key!r} is not at revision {last_revision}", subject=key)
        return self._write(key, value)

    async def put(self, key: str, value: bytes) -> int:
        self._bus._check_open()
        return self._write(key, value)

    async def delete(self, key: str) -> None:
        self._bus._check_open()
        if self._b.entries.pop(key, None) is not None:
            self._b.revision += 1


# --- the bus -----------------------------------------------------------------------------------------------------
class MemoryBus:
    """One connection to a :class:`MemoryBroker` (a private broker if none is given)."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker if broker is not None else MemoryBroker()
        self._subs: set[_MemorySubscription] = set()
        self._closed = False
        self._stats = BusStats()

    @property
    def broker(self) -> MemoryBroker:
        return self._broker

    @property
    def stats(self) -> BusStats:
        return self._stats

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("bus is closed")

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        reply: str | None = None,
    ) -> None:
        self._publish(subject, data, headers, reply)

    def _publish(self, subject: str, data: bytes, headers: Mapping[str, str] | None, reply: str | None) -> int:
        self._check_open()
        check_subject(subject, wildcards=False)
        if reply is not None:
            check_subject(reply, wildcards=False)
        if len(data) > self._broker.max_payload:
            raise PayloadTooLargeError(f"{len(data)} bytes", subject=subject)
        self._stats.published += 1
        return self._broker._route(BusMessage(subject, bytes(data), dict(headers) if headers else None, reply))

    async def subscribe(
        self, subject: str, *, queue: str | None = None, max_pending: int = DEFAULT_MAX_PENDING
    ) -> _MemorySubscription:
        self._check_open()
        check_subject(subject, wildcards=True)
        if queue is not None:
            check_subject(queue, wildcards=False)
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        sub = _MemorySubscription(self, subject, queue, max_pending)
        self._subs.add(sub)
        self._broker._add(sub)
        return sub

    async def request(
        self, subject: str, data: bytes, *, timeout_ms: int, headers: Mapping[str, str] | None = None
    ) -> BusMessage:
        self._check_open()
        inbox = self._broker._next_inbox()
        sub = await self.subscribe(inbox, max_pending=1)
        try:
            if self._publish(subject, data, headers, inbox) == 0:
                raise NoRespondersError(subject=subject)
            try:
                return await sub.next(timeout_ms=timeout_ms)
            except BusTimeoutError:
                raise BusTimeoutError(f"no reply within {timeout_ms} ms", subject=subject) from None
        finally:
            await sub.unsubscribe()

    async def flush(self, *, timeout_ms: int = 2000) -> None:
        self._check_open()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.unsubscribe()

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- durable streams ---------------------------------------------------------------------------------------
    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        duplicate_window_ms: int = 120_000,
        max_age_ms: int = 0,
        replicas: int = 1,
    ) -> None:
        self._check_open()
        check_subject(name, wildcards=False)
        for s in subjects:
            check_subject(s, wildcards=True)
        stream = self._broker._streams.get(name)
        if stream is None:
            self._broker._streams[name] = _Stream(name, subjects, duplicate_window_ms)
        else:
            stream.subjects = list(subjects)
            stream.duplicate_window_ms = duplicate_window_ms

    def _stream(self, name: str) -> _Stream:
        stream = self._broker._streams.get(name)
        if stream is None:
            raise NotFoundError(f"no stream {name!r}")
        return stream

    async def stream_state(self, name: str) -> StreamState:
        self._check_open()
        s = self._stream(name)
        first = min(s.messages) if s.messages else s.last_seq + 1
        return StreamState(name=name, messages=len(s.messages), first_seq=first, last_seq=s.last_seq)

    async def publish_durable(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 2000,
    ) -> DurableAck:
        self._check_open()
        check_subject(subject, wildcards=False)
        for stream in self._broker._streams.values():
            if stream.captures(subject):
                hdrs = dict(headers) if headers else None
                ack = stream.store(subject, bytes(data), hdrs, msg_id)
                if not ack.duplicate:  # like NATS: a stored message is also a core message
                    self._stats.published += 1
                    self._broker._route(BusMessage(subject, bytes(data), hdrs, None))
                return ack
        raise NotFoundError("no stream captures the subject", subject=subject)

    async def durable_consumer(
        self,
        stream: str,
        name: str,
        *,
        filter_subject: str | None = None,
        ack_wait_ms: int = 30_000,
    ) -> _MemoryConsumerHandle:
        self._check_open()
        check_subject(name, wildcards=False)
        s = self._stream(stream)
        consumer = s.consumers.get(name)
        if consumer is None:
            consumer = s.consumers[name] = _Consumer(s, name, filter_subject, ack_wait_ms)
        return _MemoryConsumerHandle(self, consumer)

    async def key_value(self, bucket: str, *, history: int = 1, replicas: int = 1) -> _MemoryKV:
        self._check_open()
        check_subject(bucket, wildcards=False)
        b = self._broker._buckets.get(bucket)
        if b is None:
            b = self._broker._buckets[bucket] = _Bucket(bucket)
        return _MemoryKV(self, b)
