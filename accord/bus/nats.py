"""NatsBus: the Bus port over a real NATS server (nats-py; the only module in Accord that imports it).

What this adapter adds to nats-py, and why:

- Callbacks are always set (error, disconnected, reconnected, closed): nats-py drops messages for slow consumers
  with nothing but an ``error_cb`` call, and reports permission violations the same way. Drops are counted per
  subscription and in :class:`BusStats`; violations become :class:`PermissionDeniedError` deterministically:
  ``subscribe`` does a round trip after SUB (the server's ``-ERR`` arrives before its PONG), ``flush`` raises
  for publishes refused since the previous flush, and a ``request`` whose publish was refused raises it instead
  of a timeout.
- Bounded buffers everywhere: subscription buffers are nats-py's own pending queues (``max_pending`` messages,
  ``max_pending_bytes``), read without an extra task hop; the outgoing buffer is ``pending_bytes``; while
  disconnected a publish fails fast with :class:`DisconnectedError` once ``reconnect_buffer_bytes`` (default 0)
  is used up, instead of piling up.
- Durable publishes carry ``Nats-Msg-Id`` so a retry after a lost ack is absorbed by the stream's duplicate
  window; KV updates are compare-and-set on revisions and a lost race raises :class:`ConflictError`.
- Every nats-py exception is mapped to a :class:`BusError` at this boundary (``raise ... from exc``).
- Publishes are written once per event-loop tick: a plain publish (no headers, no reply) appends its PUB
  command to the client's pending buffer and the first one of a tick schedules one write of everything pending
  (``loop.call_soon``), so a multicast to ten inboxes, or a receive loop's answers, cost one socket write and no
  hop to nats-py's flusher task. The order of publishes is kept (one buffer); ``flush`` still ends with a round
  trip. While the socket's own buffer holds more than ``pending_bytes`` (a slow server), publishes take nats-py's
  path and wait for the socket to drain. This relies on nats-py internals (``_pending``, ``_pending_data_size``,
  ``_transport``), kept in :meth:`NatsBus._publish_now` and :meth:`NatsBus._write_pending`.
- ``listen`` (:class:`~accord.bus.base.DirectBus`) hands each message to a synchronous handler inside nats-py's
  read loop: the subscription's pending queue is replaced by :class:`_Handoff`, whose ``put_nowait`` (the one
  call nats-py's ``_process_msg`` makes on it) calls the handler. No queue and no task switch between reading a
  frame and publishing what it causes (``publish_nowait``); the shells' receive paths use it. Relies on nats-py
  internals (``_pending_queue``, ``_pending_size``); tests/integration/test_bus_nats.py checks the handoff against
  the installed nats-py (in the read loop, in order, nothing pending, nothing dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as _NatsSub
from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue as _NatsKV
from nats.micro.service import EndpointInfo as _MicroEndpointInfo
from nats.micro.service import EndpointStats as _MicroEndpointStats
from nats.micro.service import Service as _MicroService
from nats.micro.service import ServiceConfig as _MicroConfig
from nats.micro.service import ServiceInfo as _MicroInfo
from nats.micro.service import ServiceStats as _MicroStats

from accord.bus.base import (
    DEFAULT_MAX_PENDING,
    BusClosedError,
    BusError,
    BusMessage,
    BusStats,
    BusTimeoutError,
    ConflictError,
    ConnectError,
    DisconnectedError,
    DurableAck,
    DurableMessage,
    InvalidSubjectError,
    KVEntry,
    NoRespondersError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceEndpoint,
    ServiceStatsFn,
    StreamState,
)
from accord.bus.subscription import SubscriptionBase
from accord.logs import get_logger

__all__ = ["MSG_ID_HEADER", "NatsBus"]

log = get_logger(__name__)

MSG_ID_HEADER: Final = "Nats-Msg-Id"
# nats-py lower-cases the server's -ERR text (subject included), so matching is case-insensitive.
_PERMISSION_RE: Final = re.compile(r"permissions violation for (publish|subscription) to \"?([^\"\s]+)", re.I)
_WRONG_LAST_SEQ: Final = (10071, 10164)  # JSStreamWrongLastSequenceErr(F|Constant)
_BAD_PUBLISH_SUBJECT: Final = re.compile(r"\s")  # nats-py's own publish check: no whitespace, CR or LF
_PUB_HEADS: Final = 4096


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_PUBACK_DECODER: Final = msgspec.json.Decoder(_PubAck)


def _map_error(exc: BaseException, subject: str | None = None) -> BusError:
    """The BusError for a nats-py exception (callers ``raise _map_error(e) from e``)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return ConflictError(text, subject=subject)
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code in _WRONG_LAST_SEQ:
        return ConflictError(text, subject=subject)
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return NotFoundError("no stream captures the subject", subject=subject)
    if isinstance(exc, nats.js.errors.NotFoundError):
        return NotFoundError(text, subject=subject)
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return DisconnectedError(f"JetStream unavailable: {text}", subject=subject)
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoRespondersError(subject=subject)
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError):
        return BusTimeoutError(text, subject=subject)
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return BusClosedError(text, subject=subject)
    if isinstance(
        exc,
        nats.errors.OutboundBufferLimitError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | nats.errors.NoServersError
        | ConnectionError,
    ):
        return DisconnectedError(text, subject=subject)
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLargeError(text, subject=subject)
    if isinstance(exc, nats.errors.BadSubjectError):
        return InvalidSubjectError(text, subject=subject)
    if isinstance(exc, nats.errors.AuthorizationError):
        return PermissionDeniedError(text, subject=subject)
    if isinstance(exc, nats.js.errors.KeyValueError | nats.js.errors.InvalidKeyError):
        return InvalidSubjectError(text, subject=subject)
    return BusError(f"{type(exc).__name__}: {text}", subject=subject)


async def _roundtrip(nc: Client, timeout_s: float) -> None:
    """PING/PONG after everything queued so far has been written.

    nats-py 2.16's ``flush()`` writes its PING straight to the socket while SUB/PUB commands wait in the pending
    buffer for the flusher task, so the PONG can come back before the server has seen them (a subscribe that
    "returned" without interest registered, a flush that did not flush). Writing the pending buffer first
    restores the order. ``_flush_pending`` is nats-py internal; keep this in step with the pinned version.
    """
    with anyio.fail_after(timeout_s):
        await nc._flush_pending(force_flush=True)
        await nc.flush(timeout=max(1, math.ceil(timeout_s)))


class _NatsSubscription(SubscriptionBase):
    """A nats-py iterator-mode subscription read straight from its bounded pending queue.

    nats-py's own ``messages`` iterator creates a task per message; reading the queue directly keeps the path
    read-loop -> queue -> consumer, the same number of hops as a raw nats-py callback. It relies on two
    nats-py internals (``_pending_queue`` and ``_pending_size``, stable since nats-py 2.0), kept in this class.
    Drops are counted in ``_dropped`` by the bus's error callback (nats-py reports them only there).
    """

    __slots__ = ("_bus", "_q", "_sub", "_waiting")

    def __init__(self, bus: NatsBus, sub: _NatsSub, subject: str, queue: str | None, max_pending: int) -> None:
        super().__init__(subject, queue, max_pending)
        self._bus = bus
        self._sub = sub
        self._q: asyncio.Queue[Msg] = sub._pending_queue
        self._waiting = False

    @property
    def pending(self) -> int:
        return 0 if self._closed else self._q.qsize()

    def _poll(self) -> BusMessage | None:
        if self._closed:
            raise BusClosedError(subject=self._subject)
        q = self._q
        if q.empty():  # tested first: an empty get_nowait() raises, and an exception per wait costs
            return None
        msg = q.get_nowait()
        q.task_done()
        return self._deliver(msg)

    async def __anext__(self) -> BusMessage:
        """The base's ``_poll`` and ``_wait`` written out in one coroutine: the shells' receive loops run through
        here for every message, and the call (when waiting, the coroutine) less per message is measurable."""
        q = self._q
        if not self._closed:
            if q.empty():
                self._waiting = True
                try:
                    msg = await q.get()
                finally:
                    self._waiting = False
            else:
                msg = q.get_nowait()
            q.task_done()
            if not self._closed:  # woken by unsubscribe/close (the sentinel, or a message that lost the race)
                return self._deliver(msg)
        raise StopAsyncIteration

    async def _wait(self) -> BusMessage:
        """For ``next()``, once ``_poll`` found the queue empty; the wait is written out in ``__anext__``."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise BusClosedError(subject=self._subject) from None

    def _deliver(self, msg: Msg) -> BusMessage:
        self._sub._pending_size -= len(msg.data)
        self._bus._stats.delivered += 1
        return BusMessage(msg.subject, msg.data, msg.headers, msg.reply or None)

    def _hand_to(self, handler: Callable[[BusMessage], None]) -> None:
        """From now on, give every message to ``handler`` as nats-py reads it (see :class:`_Handoff`); those
        already queued go to it first, in order."""
        q = self._q
        while not q.empty():
            msg = q.get_nowait()
            q.task_done()
            if msg is not None and not self._closed:
                _Handoff.call(handler, self._deliver(msg))
        self._sub._pending_queue = cast("asyncio.Queue[Msg]", _Handoff(self, handler))

    def _discard(self) -> None:
        """Wake a consumer blocked on the (then empty) queue; what is still queued stays unread."""
        if self._waiting:
            with contextlib.suppress(asyncio.QueueFull):  # full: the consumer is about to wake anyway
                self._q.put_nowait(cast(Msg, None))
        self._bus._subs.pop(self._sub, None)

    async def _remove_interest(self) -> None:
        nc = self._bus._nc
        if nc is None or nc.is_closed or nc.is_draining:
            return
        try:
            await self._sub.unsubscribe()
        except nats.errors.BadSubscriptionError:
            return
        except nats.errors.Error as exc:
            raise _map_error(exc, self._subject) from exc


class _Handoff:
    """Stands in for a nats-py subscription's pending queue (:meth:`NatsBus.listen`): nats-py's read loop calls
    ``put_nowait`` for each message, which hands it to the handler there and then. No queue, no task switch: the
    frame is handled, and what it causes is published, before the read loop parses the next message. The other
    methods are the queue API nats-py may call on a subscription it thinks is in iterator mode."""

    __slots__ = ("_handler", "_owner")

    def __init__(self, owner: _NatsSubscription, handler: Callable[[BusMessage], None]) -> None:
        self._owner = owner
        self._handler = handler

    def put_nowait(self, msg: Msg) -> None:
        owner = self._owner
        if owner._closed:
            owner._sub._pending_size -= len(msg.data)
            return
        self.call(self._handler, owner._deliver(msg))

    @staticmethod
    def call(handler: Callable[[BusMessage], None], message: BusMessage) -> None:
        try:
            handler(message)
        except Exception:  # never into nats-py's read loop: it would drop the connection
            log.exception("bus.handler_failed", subject=message.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        return None

    async def join(self) -> None:
        return None


class _NatsDurableMessage:
    __slots__ = ("_msg", "deliveries", "stream_seq")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        md = msg.metadata
        self.stream_seq = md.sequence.stream
        self.deliveries = md.num_delivered

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> Mapping[str, str] | None:
        return self._msg.headers

    async def ack(self) -> None:
        try:
            await self._msg.ack()
        except nats.errors.Error as exc:
            raise _map_error(exc, self._msg.subject) from exc

    async def nak(self) -> None:
        try:
            await self._msg.nak()
        except nats.errors.Error as exc:
            raise _map_error(exc, self._msg.subject) from exc


class _NatsDurableConsumer:
    def __init__(self, name: str, psub: JetStreamContext.PullSubscription) -> None:
        self._name = name
        self._psub = psub

    @property
    def name(self) -> str:
        return self._name

    async def fetch(self, batch: int = 1, *, timeout_ms: int = 1000) -> list[DurableMessage]:
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout_ms / 1000)
        except TimeoutError:  # nats-py raises both its own TimeoutError and asyncio's here
            return []
        except nats.errors.Error as exc:
            raise _map_error(exc) from exc
        return [_NatsDurableMessage(m) for m in msgs]

    async def close(self) -> None:
        try:
            await self._psub.unsubscribe()
        except nats.errors.Error:
            return


class _NatsKeyValue:
    def __init__(self, bus: NatsBus, bucket: str, kv: _NatsKV) -> None:
        self._bus = bus
        self._bucket = bucket
        self._kv = kv

    @property
    def bucket(self) -> str:
        return self._bucket

    def _error(self, exc: BaseException, key: str, mark: int) -> BusError:
        if isinstance(exc, TimeoutError) and self._bus._take_violation(
            "publish", f"$KV.{self._bucket}.{key}", mark
        ):
            return PermissionDeniedError("KV write refused by the server", subject=key)
        return _map_error(exc, key)

    async def get(self, key: str) -> KVEntry | None:
        try:
            e = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # also KeyDeletedError
            return None
        except nats.errors.Error as exc:
            raise _map_error(exc, key) from exc
        return KVEntry(key=key, value=e.value or b"", revision=e.revision or 0)

    async def create(self, key: str, value: bytes) -> int:
        mark = self._bus._violation_serial
        try:
            return await self._kv.create(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(exc, key, mark) from exc

    async def update(self, key: str, value: bytes, *, last_revision: int) -> int:
        mark = self._bus._violation_serial
        try:
            return await self._kv.update(key, value, last=last_revision)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(exc, key, mark) from exc

    async def put(self, key: str, value: bytes) -> int:
        mark = self._bus._violation_serial
        try:
            return await self._kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(exc, key, mark) from exc

    async def delete(self, key: str) -> None:
        mark = self._bus._violation_serial
        try:
            await self._kv.delete(key)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._error(exc, key, mark) from exc


class _MicroServiceWithCounts(_MicroService):
    """nats.micro's Service (PING, INFO, STATS on ``$SRV.*``) for endpoints its owner serves itself.

    nats.micro counts requests only on endpoints it subscribes to and handles; an Accord agent receives its
    traffic through its own subscriptions, so INFO lists the owner's :class:`ServiceEndpoint` descriptors and
    STATS asks the owner's ``stats`` callback for their counts. Everything else (subjects, ids, the JSON
    schemas) is nats.micro's, so standard NATS tooling (``nats micro ls|info|stats``) reads it.
    """

    def __init__(
        self,
        nc: Client,
        config: _MicroConfig,
        endpoints: Sequence[ServiceEndpoint],
        stats: ServiceStatsFn | None,
        on_ping: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(nc, config)
        self._accord_endpoints = list(endpoints)
        self._accord_stats = stats
        self._accord_on_ping = on_ping

    async def _handle_ping_request(self, msg: Msg) -> None:
        if self._accord_on_ping is not None:
            try:
                self._accord_on_ping()
            except Exception:  # the owner's hook must not stop the PING answer
                log.exception("service.ping_hook_failed", service=self._name)
        await super()._handle_ping_request(msg)

    def info(self) -> _MicroInfo:
        info = super().info()
        info.endpoints = [
            _MicroEndpointInfo(name=e.name, subject=e.subject, queue_group="", metadata=dict(e.metadata))
            for e in self._accord_endpoints
        ]
        return info

    def stats(self) -> _MicroStats:
        stats = super().stats()
        counts = self._accord_stats() if self._accord_stats is not None else {}
        endpoints = []
        for e in self._accord_endpoints:
            c = counts.get(e.name)
            requests = c.requests if c is not None else 0
            processing = c.processing_ns if c is not None else 0
            endpoints.append(
                _MicroEndpointStats(
                    name=e.name,
                    subject=e.subject,
                    queue_group="",
                    num_requests=requests,
                    num_errors=c.errors if c is not None else 0,
                    last_error=(c.last_error or None) if c is not None else None,
                    processing_time=processing,
                    average_processing_time=processing // requests if requests else 0,
                    data=dict(c.data) if c is not None and c.data is not None else None,
                )
            )
        stats.endpoints = endpoints
        return stats


class _NatsServiceHandle:
    __slots__ = ("_service",)

    def __init__(self, service: _MicroServiceWithCounts) -> None:
        self._service = service

    @property
    def id(self) -> str:
        return self._service.id

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._service.stop()


class NatsBus:
    """The Bus port over NATS. ``async with NatsBus("nats://127.0.0.1:4222") as bus: ...``

    Authentication: ``nkey_seed`` (a user nkey seed, ``SU...``) or ``credentials`` (a ``.creds`` file with a
    user JWT and seed). ``inbox_prefix`` narrows where replies come back (an agent with per-agent permissions
    uses ``_INBOX.<agent id>`` and may subscribe only there). Durations are in ms.
    """

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        name: str | None = None,
        nkey_seed: str | None = None,
        credentials: str | Path | None = None,
        inbox_prefix: str | None = None,
        connect_timeout_ms: int = 2000,
        connect_attempts: int = 3,
        reconnect_wait_ms: int = 250,
        max_reconnect_attempts: int = -1,
        ping_interval_ms: int = 10_000,
        pending_bytes: int = 2 * 1024 * 1024,
        reconnect_buffer_bytes: int = 0,
        max_pending_bytes: int = 64 * 1024 * 1024,
        drain_timeout_ms: int = 2000,
        api_timeout_ms: int = 5000,
    ) -> None:
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        self._name = name
        self._nkey_seed = nkey_seed
        self._auth_error: Exception | None = None
        self._credentials = credentials
        self._inbox_prefix = inbox_prefix
        self._connect_timeout_ms = connect_timeout_ms
        self._connect_attempts = connect_attempts
        self._reconnect_wait_ms = reconnect_wait_ms
        self._max_reconnect_attempts = max_reconnect_attempts
        self._ping_interval_ms = ping_interval_ms
        self._pending_bytes = pending_bytes
        self._reconnect_buffer_bytes = reconnect_buffer_bytes
        self._max_pending_bytes = max_pending_bytes
        self._drain_timeout_ms = drain_timeout_ms
        self._api_timeout_ms = api_timeout_ms
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stats = BusStats()
        self._subs: dict[_NatsSub, _NatsSubscription] = {}
        # Refusals reported by the server: (serial, "publish" | "subscription", subject lower-cased).
        self._violations: list[tuple[int, str, str]] = []
        self._violation_serial = 0
        self._disconnected_at: float | None = None
        self._last_error: BaseException | None = None
        self._closing = False
        self._connected: anyio.Event | None = None  # created in connect() (needs a running event loop)
        self._write_armed = False
        """A write of the client's pending buffer is scheduled for the end of this loop tick."""
        self._pub_heads: dict[str, bytes] = {}
        """Subject -> its checked ``PUB <subject>  `` prefix (a shell publishes to few subjects, over and over:
        each is checked and encoded once; at most ``_PUB_HEADS``, emptied when full)."""

    # --- lifecycle ---------------------------------------------------------------------------------------------
    @property
    def stats(self) -> BusStats:
        return self._stats

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def connected_url(self) -> str | None:
        """The server this connection is on now (it moves on reconnect, e.g. in a cluster)."""
        nc = self._nc
        url = nc.connected_url if nc is not None else None
        return None if url is None else url.geturl()

    async def wait_connected(self, *, timeout_ms: int) -> None:
        """Wait until connected (again); BusTimeoutError after ``timeout_ms``, BusClosedError if closed."""
        self._conn()
        try:
            with anyio.fail_after(timeout_ms / 1000):
                while not self.is_connected:
                    assert self._connected is not None
                    await self._connected.wait()
                    self._conn()
                    if not self.is_connected:  # the disconnect callback has not run yet
                        await anyio.sleep(0.01)
        except TimeoutError:
            raise BusTimeoutError(f"not connected within {timeout_ms} ms") from None

    async def connect(self) -> Self:
        if self._nc is not None:
            return self
        nc = Client()
        opts: dict[str, Any] = {
            "servers": self._servers,
            "name": self._name,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
            "allow_reconnect": True,
            "connect_timeout": self._connect_timeout_ms / 1000,
            "reconnect_time_wait": self._reconnect_wait_ms / 1000,
            "max_reconnect_attempts": self._connect_attempts,
            "ping_interval": max(1, self._ping_interval_ms // 1000),
            "pending_size": self._pending_bytes,
            "drain_timeout": self._drain_timeout_ms / 1000,
            "flush_timeout": self._api_timeout_ms / 1000,
        }
        if self._nkey_seed is not None:
            opts["nkeys_seed_str"] = self._nkey_seed
        if self._credentials is not None:
            opts["user_credentials"] = str(self._credentials)
        if self._inbox_prefix is not None:
            opts["inbox_prefix"] = self._inbox_prefix
        budget = (self._connect_timeout_ms + self._reconnect_wait_ms) * (self._connect_attempts + 1) / 1000
        try:
            with anyio.fail_after(budget + 1):
                await nc.connect(**opts)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            seen = [self._auth_error, self._last_error, nc.last_error, exc]
            await nc.close()
            cause = self._last_error or exc
            if any(
                isinstance(e, nats.errors.AuthorizationError) or "authorization violation" in str(e).lower()
                for e in seen
                if e is not None
            ):
                raise PermissionDeniedError(f"authorization failed at {self._servers}") from exc
            raise ConnectError(f"cannot connect to {self._servers}: {cause!r}") from exc
        # Connected once: from now on reconnect as configured (default: forever).
        nc.options["max_reconnect_attempts"] = self._max_reconnect_attempts
        self._nc = nc
        self._js = nc.jetstream(timeout=self._api_timeout_ms / 1000)
        self._connected = anyio.Event()
        self._connected.set()
        log.debug("bus.connected", url=self.connected_url, name=self._name)
        return self

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Flush what was published, end every subscription (undelivered buffered messages are discarded),
        close the connection. Idempotent."""
        nc = self._nc
        if nc is None or self._closing:
            return
        self._closing = True
        try:
            if nc.is_connected:
                with anyio.move_on_after(self._drain_timeout_ms / 1000):
                    with contextlib.suppress(nats.errors.Error, TimeoutError):
                        await _roundtrip(nc, self._drain_timeout_ms / 1000)
        finally:
            for sub in list(self._subs.values()):
                sub._mark_closed()
            with anyio.CancelScope(shield=True):
                await nc.close()

    def _conn(self) -> Client:
        nc = self._nc
        if nc is None:
            raise BusClosedError("not connected yet (use `async with` or connect())")
        if nc.is_closed or self._closing:
            raise BusClosedError("bus is closed")
        return nc

    # --- callbacks (nats-py tasks call these) ------------------------------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        """Count and log a client error. nats-py calls this inline from its read loop, so it must not raise:
        an exception here (a log stream that was closed) would stop the connection reading."""
        with contextlib.suppress(Exception):  # see the docstring; the counts are taken before any logging
            self._count_error(exc)

    def _count_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            sub = self._subs.get(exc.sub)
            if sub is not None:
                sub._dropped += 1
            self._stats.dropped += 1
            if self._stats.dropped & (self._stats.dropped - 1) == 0:  # log the 1st, 2nd, 4th, 8th... drop
                log.warning("bus.slow_consumer", subject=exc.subject, dropped=self._stats.dropped)
            return
        if "authorization violation" in str(exc).lower():
            self._auth_error = exc  # kept: a later connection reset must not hide why the server hung up
            if self._nc is not None:
                self._refused_by_server(self._nc)
        m = _PERMISSION_RE.search(str(exc))
        if m is not None:
            self._violation_serial += 1
            self._violations.append((self._violation_serial, m.group(1).lower(), m.group(2).lower()))
            del self._violations[:-256]
            self._stats.permission_denied += 1
            log.warning("bus.permission_denied", op=m.group(1).lower(), subject=m.group(2).lower())
            return
        self._last_error = exc
        self._stats.errors += 1
        log.info("bus.error", error=repr(exc))

    def _refused_by_server(self, nc: Client) -> None:
        """The server no longer admits this key (revoked, or its user removed): stop reconnecting, since every
        attempt would be refused. The client then closes (nats-py drops a server tried more often than
        ``max_reconnect_attempts``; 0 would mean forever) and publishing raises BusClosedError. nats-py leaves
        the socket of a refused attempt open, so it is closed here."""
        transport = getattr(nc, "_transport", None)  # the refused attempt's; nats-py replaces it on the next
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
        if nc.options.get("max_reconnect_attempts") != 1:
            nc.options["max_reconnect_attempts"] = 1
            log.warning("bus.unauthorized", name=self._name, servers=self._servers)

    async def _on_disconnected(self) -> None:
        if self._connected is None or self._connected.is_set():
            self._connected = anyio.Event()
        self._stats.disconnects += 1
        self._disconnected_at = time.monotonic()
        log.info("bus.disconnected", name=self._name)

    async def _on_reconnected(self) -> None:
        if self._connected is not None:
            self._connected.set()
        self._stats.reconnects += 1
        if self._disconnected_at is not None:
            self._stats.last_recovery_ms = int((time.monotonic() - self._disconnected_at) * 1000)
            self._disconnected_at = None
        log.info("bus.reconnected", url=self.connected_url, recovery_ms=self._stats.last_recovery_ms)

    async def _on_closed(self) -> None:
        if self._connected is not None:
            self._connected.set()  # wake waiters; they find the bus closed
        for sub in list(self._subs.values()):
            sub._mark_closed()
        log.debug("bus.closed", name=self._name)

    def _take_violation(self, op: str, subject: str, after: int) -> bool:
        """Consume a refusal of ``op`` ("publish" or "subscription") on ``subject`` reported after ``after``."""
        subject = subject.lower()
        for i, (serial, vop, vsubject) in enumerate(self._violations):
            if serial > after and vop == op and vsubject == subject:
                del self._violations[i]
                return True
        return False

    def _refuse_offline(self, nc: Client, subject: str, size: int) -> None:
        """Called only when not connected: fail fast unless the bounded reconnect buffer has room."""
        if nc.is_closed or self._closing:
            raise BusClosedError("bus is closed", subject=subject)
        if size + nc.pending_data_size > self._reconnect_buffer_bytes:
            raise DisconnectedError("not connected; reconnect buffer full", subject=subject)

    # --- core pub/sub ------------------------------------------------------------------------------------------
    def publish_nowait(self, subject: str, data: bytes) -> bool:
        """Queue a plain publish for this loop tick's write (see the module docstring); False when it has to be
        ``await publish(...)`` instead (not connected, closing, buffers full, a subject nats-py would refuse)."""
        nc = self._nc
        return nc is not None and nc.is_connected and self._publish_now(nc, subject, data)

    async def listen(
        self, subject: str, handler: Callable[[BusMessage], None], *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> _NatsSubscription:
        """Subscribe and hand every message to ``handler`` in the connection's read loop (:class:`_Handoff`)."""
        sub = await self.subscribe(subject, max_pending=max_pending)
        sub._hand_to(handler)
        return sub

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        reply: str | None = None,
    ) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:
            self._refuse_offline(self._conn(), subject, len(data))
            nc = self._conn()
        elif headers is None and not reply and self._publish_now(nc, subject, data):
            return
        try:
            await nc.publish(
                subject,
                data,
                reply or "",
                headers if headers is None or isinstance(headers, dict) else dict(headers),
            )
            if nc._transport is not None and self._backlog(nc) > self._pending_bytes:  # a slow reader
                await nc._transport.drain()  # type: ignore[no-untyped-call]
        except nats.errors.Error as exc:
            raise _map_error(exc, subject) from exc
        except OSError as exc:
            raise DisconnectedError(str(exc), subject=subject) from exc
        self._stats.published += 1

    def _publish_now(self, nc: Client, subject: str, data: bytes) -> bool:
        """Append one PUB to the client's pending buffer, to be written at the end of this loop tick; False when
        it must take nats-py's path (closing, draining, a full buffer, a subject nats-py would refuse)."""
        size = len(data)
        if (
            self._closing
            or nc.is_draining_pubs
            or size > nc.max_payload
            or nc._pending_data_size + size > self._pending_bytes
            or self._backlog(nc) > self._pending_bytes
        ):
            return False
        head = self._pub_heads.get(subject)
        if head is None:
            if not subject or _BAD_PUBLISH_SUBJECT.search(subject) is not None:
                return False
            if len(self._pub_heads) >= _PUB_HEADS:
                self._pub_heads.clear()
            head = self._pub_heads[subject] = b"PUB %b  " % subject.encode()
        command = b"%b%d\r\n%b\r\n" % (head, size, data)
        nc._pending.append(command)
        nc._pending_data_size += len(command)
        stats = nc.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        self._stats.published += 1
        if not self._write_armed:
            self._write_armed = True
            asyncio.get_running_loop().call_soon(self._write_pending)
        return True

    def _write_pending(self) -> None:
        """Write everything pending in one go (as nats-py's flusher does, without its task hop)."""
        self._write_armed = False
        nc = self._nc
        if nc is None or not nc.is_connected or not nc._pending or nc._transport is None:
            return  # disconnected: nats-py writes its pending buffer after the reconnect
        pending, nc._pending, nc._pending_data_size = nc._pending, [], 0
        try:
            nc._transport.writelines(pending)
        except OSError as exc:  # the connection broke under us: nats-py's read loop notices and reconnects
            self._last_error = exc

    @staticmethod
    def _backlog(nc: Client) -> int:
        """Bytes the socket has not taken yet (0 when the transport does not say)."""
        writer = getattr(nc._transport, "_io_writer", None)
        transport = getattr(writer, "transport", None)
        return int(transport.get_write_buffer_size()) if transport is not None else 0

    async def subscribe(
        self, subject: str, *, queue: str | None = None, max_pending: int = DEFAULT_MAX_PENDING
    ) -> _NatsSubscription:
        nc = self._conn()
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        mark = self._violation_serial
        try:
            raw = await nc.subscribe(
                subject,
                queue=queue or "",
                pending_msgs_limit=max_pending,
                pending_bytes_limit=self._max_pending_bytes,
            )
        except nats.errors.Error as exc:
            raise _map_error(exc, subject) from exc
        sub = _NatsSubscription(self, raw, subject, queue, max_pending)
        self._subs[raw] = sub
        if nc.is_connected:
            # One round trip: the interest is registered when it returns, and a permissions -ERR for this SUB
            # has been read (the server answers in order).
            try:
                await _roundtrip(nc, self._api_timeout_ms / 1000)
            except (nats.errors.Error, TimeoutError) as exc:
                await sub.unsubscribe()
                raise _map_error(exc, subject) from exc
            if self._take_violation("subscription", subject, mark):
                await sub.unsubscribe()
                raise PermissionDeniedError("subscribe refused by the server", subject=subject)
        return sub

    async def request(
        self, subject: str, data: bytes, *, timeout_ms: int, headers: Mapping[str, str] | None = None
    ) -> BusMessage:
        nc = self._nc
        if nc is None or not nc.is_connected:
            self._refuse_offline(self._conn(), subject, len(data))
            nc = self._conn()
        mark = self._violation_serial
        try:
            msg = await nc.request(
                subject,
                data,
                timeout=timeout_ms / 1000,
                headers=headers if headers is None or isinstance(headers, dict) else dict(headers),
            )
        except nats.errors.TimeoutError as exc:
            if self._take_violation("publish", subject, mark):
                raise PermissionDeniedError("publish refused by the server", subject=subject) from exc
            raise BusTimeoutError(f"no reply within {timeout_ms} ms", subject=subject) from exc
        except nats.errors.Error as exc:
            raise _map_error(exc, subject) from exc
        self._stats.published += 1
        self._stats.delivered += 1
        return BusMessage(msg.subject, msg.data, msg.headers, msg.reply or None)

    async def flush(self, *, timeout_ms: int = 2000) -> None:
        nc = self._conn()
        if not nc.is_connected:
            raise DisconnectedError("cannot flush while disconnected")
        try:
            await _roundtrip(nc, timeout_ms / 1000)
        except (nats.errors.Error, TimeoutError) as exc:
            raise _map_error(exc) from exc
        denied = [s for _, op, s in self._violations if op == "publish"]
        if denied:
            self._violations = [v for v in self._violations if v[1] != "publish"]
            raise PermissionDeniedError(f"publish refused by the server: {', '.join(denied)}", subject=denied[0])

    # --- NATS service protocol ---------------------------------------------------------------------------------
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
    ) -> _NatsServiceHandle:
        """Answer PING, INFO and STATS on ``$SRV.*`` as an instance of service ``name`` (nats.micro).

        ``endpoints`` are listed by INFO; STATS reports the counts ``stats()`` returns for them; ``on_ping`` is
        called before each PING is answered (an agent re-advertises then, for discovery). The service
        lives until ``stop()`` or until the bus closes; it is resubscribed after a reconnect like every
        subscription. Needs subscribe permission on ``$SRV.>`` (BusError otherwise).
        """
        nc = self._conn()
        try:
            config = _MicroConfig(
                name=name, version=version, description=description or None, metadata=dict(metadata or {})
            )
        except ValueError as exc:
            raise BusError(f"bad service config: {exc}") from exc
        service = _MicroServiceWithCounts(nc, config, endpoints, stats, on_ping)
        mark = self._violation_serial
        try:
            await service.start()
            await _roundtrip(nc, self._api_timeout_ms / 1000)
        except (nats.errors.Error, TimeoutError) as exc:
            raise _map_error(exc, "$SRV") from exc
        if any(serial > mark and op == "subscription" for serial, op, _ in self._violations):
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await service.stop()
            raise PermissionDeniedError("subscribe to $SRV refused by the server", subject="$SRV.>")
        return _NatsServiceHandle(service)

    # --- JetStream ---------------------------------------------------------------------------------------------
    def _jsc(self) -> JetStreamContext:
        self._conn()
        assert self._js is not None
        return self._js

    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        duplicate_window_ms: int = 120_000,
        max_age_ms: int = 0,
        replicas: int = 1,
    ) -> None:
        js = self._jsc()
        cfg = js_api.StreamConfig(
            name=name,
            subjects=list(subjects),
            duplicate_window=duplicate_window_ms / 1000,
            max_age=max_age_ms / 1000 if max_age_ms else None,
            num_replicas=replicas,
            storage=js_api.StorageType.FILE,
        )
        try:
            try:
                await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await js.add_stream(cfg)
            else:
                await js.update_stream(cfg)
        except nats.errors.Error as exc:
            raise _map_error(exc, name) from exc

    async def stream_state(self, name: str) -> StreamState:
        js = self._jsc()
        try:
            info = await js.stream_info(name)
        except nats.errors.Error as exc:
            raise _map_error(exc, name) from exc
        st = info.state
        return StreamState(name=name, messages=st.messages, first_seq=st.first_seq, last_seq=st.last_seq)

    async def publish_durable(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int = 2000,
    ) -> DurableAck:
        nc = self._nc
        if nc is None or not nc.is_connected:
            self._refuse_offline(self._conn(), subject, len(data))
            nc = self._conn()
        hdrs = {MSG_ID_HEADER: msg_id} if headers is None else {**headers, MSG_ID_HEADER: msg_id}
        mark = self._violation_serial
        try:
            msg = await nc.request(subject, data, timeout=timeout_ms / 1000, headers=hdrs)
        except nats.errors.NoRespondersError as exc:
            raise NotFoundError("no stream captures the subject", subject=subject) from exc
        except nats.errors.TimeoutError as exc:
            if self._take_violation("publish", subject, mark):
                raise PermissionDeniedError("publish refused by the server", subject=subject) from exc
            raise BusTimeoutError(f"no stream ack within {timeout_ms} ms", subject=subject) from exc
        except nats.errors.Error as exc:
            raise _map_error(exc, subject) from exc
        ack = _PUBACK_DECODER.decode(msg.data)
        if ack.error is not None:
            err = ack.error
            detail = f"{err.code}/{err.err_code}: {err.description}"
            if err.err_code in _WRONG_LAST_SEQ:
                raise ConflictError(detail, subject=subject)
            if err.code == 503:
                raise DisconnectedError(f"JetStream unavailable: {detail}", subject=subject)
            raise BusError(detail, subject=subject)
        self._stats.published += 1
        return DurableAck(stream=ack.stream, seq=ack.seq, duplicate=ack.duplicate)

    async def durable_consumer(
        self,
        stream: str,
        name: str,
        *,
        filter_subject: str | None = None,
        ack_wait_ms: int = 30_000,
    ) -> _NatsDurableConsumer:
        js = self._jsc()
        try:
            try:
                await js.consumer_info(stream, name)
            except nats.js.errors.NotFoundError:
                await js.add_consumer(
                    stream,
                    js_api.ConsumerConfig(
                        durable_name=name,
                        name=name,
                        ack_policy=js_api.AckPolicy.EXPLICIT,
                        deliver_policy=js_api.DeliverPolicy.ALL,
                        ack_wait=ack_wait_ms / 1000,
                        filter_subject=filter_subject,
                    ),
                )
            psub = await js.pull_subscribe_bind(durable=name, stream=stream)
        except nats.errors.Error as exc:
            raise _map_error(exc, stream) from exc
        return _NatsDurableConsumer(name, psub)

    async def key_value(self, bucket: str, *, history: int = 1, replicas: int = 1) -> _NatsKeyValue:
        js = self._jsc()
        try:
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    js_api.KeyValueConfig(bucket=bucket, history=history, replicas=replicas)
                )
        except nats.errors.Error as exc:
            raise _map_error(exc, bucket) from exc
        return _NatsKeyValue(self, bucket, kv)
