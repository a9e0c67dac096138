"""What the Agent and the Requester shells share: one endpoint on the bus.

An endpoint has an identity, a bus, a trust store and a replay guard; an :class:`~accord.runtime.outbox.Outbox`
that seals and publishes what its machines send; a :class:`~accord.runtime.timers.TimerService` that turns their
``SetTimer`` into ``TimerFired``; the receive path (:meth:`Endpoint._listen`) that feeds each frame to a
synchronous handler and publishes its answers before the next frame is read (on NatsBus inside the connection's
read loop, with no queue or task switch; elsewhere from a receive loop per subscription); the sender check every
frame passes first (spec 4.1: the last token of the subject is the publisher); the inbox subject of each peer,
validated once; and, on a bus that can host it, a NATS service registration (``$SRV.PING|INFO|STATS``) whose
counts come from :meth:`Endpoint.service_counts`.

Every structure an endpoint keeps is bounded (:class:`EndpointLimits`, spec 11.9). An input that would grow one
past its bound is refused (or, for the outbox, dropped), counted in :attr:`Endpoint.limited` by the bound's name
and logged (the 1st, 2nd, 4th... time: a flood does not flood the log); honest state the endpoint already holds
is never evicted to make room for it. Refused frames are counted by reason (:attr:`Endpoint.refusals`) and
logged the same sparse way: a log line costs more than refusing a frame from an unknown key, and a flood of them
would cost the disk too.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup
from msgspec import Meta, Struct

import accord
from accord.bus.base import (
    Bus,
    BusError,
    BusMessage,
    DirectBus,
    EndpointCounts,
    ServiceEndpoint,
    ServiceHandle,
    ServiceHost,
    Subscription,
)
from accord.errors import AccordError
from accord.logs import sparse
from accord.protocol import subjects
from accord.runtime.outbox import Outbox
from accord.runtime.timers import Clock, TimerService, now_ns
from accord.security import (
    Expect,
    Identity,
    Opened,
    ReplayError,
    ReplayGuard,
    SecurityError,
    TrustStore,
    open_frame,
    peek,
)

__all__ = ["Endpoint", "EndpointLimits"]

K = TypeVar("K", bound=Hashable)

_Positive = Annotated[int, Meta(ge=1)]


class EndpointLimits(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds on what a shell holds besides its machines (spec 11.9; the machines' own are in ContractorProfile
    and RequesterConfig, the replay guard's in ReplayGuard, the registry's in Registry)."""

    outbox: _Positive = 10_000
    """Messages queued for publishing at most; one more is dropped (the protocol's timers recover a lost one)."""
    timers: _Positive = 100_000
    """Timers armed at once at most (a backstop: the machines' bounds keep theirs far below)."""
    peers: _Positive = 4096
    """Peers whose inbox subject is remembered; the cache is emptied when it would grow past this."""
    token_counts: _Positive = 64
    """Agent: prompts being counted with a model's tokenizer at once; a Task beyond this is refused."""


class Endpoint(Generic[K]):
    """The shared half of a shell; ``K`` is the key type of its timers."""

    service_name: ClassVar[str]
    """The NATS service kind instances of this shell register as (``nats micro ls`` groups them under it)."""

    def __init__(
        self,
        identity: Identity,
        *,
        bus: Bus,
        trust: TrustStore,
        replay_guard: ReplayGuard | None,
        rng: random.Random | None,
        service: bool,
        log: Any,
        clock: Clock = now_ns,
        authenticated_bus: bool = False,
        limits: EndpointLimits | None = None,
    ) -> None:
        self.identity = identity
        self.id = identity.id
        self.bus = bus
        self.trust = trust
        self.clock = clock
        """``now`` for everything this endpoint does (its machines, checks, timers); tests inject skewed clocks."""
        self.authenticated_bus = authenticated_bus
        """The bus authenticates every publisher: each party connects as its own NATS user and may publish only on
        subjects that end in its own id (spec 11.6, as ``accord up`` runs its server). Then frames this endpoint
        does not act on alone are only peeked (key trusted, signature unchecked); otherwise every frame is
        verified before it changes anything (docs/VERIFICATION.md)."""
        self.replay_guard = replay_guard if replay_guard is not None else ReplayGuard(start_ns=clock())
        self._rng = rng if rng is not None else random.Random()
        self._log = log
        """A structlog logger bound to this endpoint's identity (structlog loggers are untyped: ``Any``)."""
        self.limits = limits if limits is not None else EndpointLimits()
        self.limited: Counter[str] = Counter()
        """Inputs refused because a bound was reached, by the bound's name (spec 11.9)."""
        self.refusals: Counter[str] = Counter()
        """Frames refused before a machine saw them, by reason (``unknown_key``, ``bad_signature``, ``replay``...),
        and events a machine raised on (``machine``)."""
        self._outbox = Outbox(bus, identity, capacity=self.limits.outbox)
        self._timers: TimerService[K] = TimerService(self._on_timer, clock=clock, capacity=self.limits.timers)
        self._inboxes: dict[str, str] = {}
        self._want_service = service
        self._service: ServiceHandle | None = None

    # --- hooks --------------------------------------------------------------------------------------------------
    def _on_timer(self, key: K) -> None:
        raise NotImplementedError

    def _distrusted_peers(self, now: int) -> None:
        """Tell the machines about peers in flight whose keys the trust store no longer vouches for."""
        raise NotImplementedError

    async def _watch_trust(self, every_ms: int = 1_000) -> None:
        """Re-check, every ``every_ms``, the trust of the peers this endpoint has work in flight with: a key
        revoked while the mesh runs (the trust file followed, a revocation merged) stops its work within this."""
        while True:
            await anyio.sleep(every_ms / 1000)
            self._outbox.hold()
            try:
                self._distrusted_peers(self.clock())
            finally:
                await self._outbox.flush()

    def _untrusted(self, peer: str, now: int) -> bool:
        try:
            self.trust.check(peer, now)
        except SecurityError:
            return True
        return False

    def service_counts(self) -> dict[str, EndpointCounts]:
        """The per-endpoint counts ``$SRV.STATS`` reports."""
        raise NotImplementedError

    # --- receiving ----------------------------------------------------------------------------------------------
    async def _listen(
        self, tg: TaskGroup, subject: str, handler: Callable[[BusMessage], None], *, max_pending: int
    ) -> None:
        """Feed every frame on ``subject`` to ``handler`` until ``tg`` is cancelled. On a
        :class:`~accord.bus.base.DirectBus` the handler runs as the connection reads the frame, and what the
        machines send in answer is handed to the bus before the next frame is read (no queue, no task switch);
        on any other bus a receive loop (:meth:`_pump`) reads the subscription."""
        bus = self.bus
        if isinstance(bus, DirectBus):
            sub = await bus.listen(subject, self._direct(handler), max_pending=max_pending)
            tg.start_soon(_hold_open, sub)
        else:
            tg.start_soon(self._pump, await bus.subscribe(subject, max_pending=max_pending), handler)

    def _direct(self, handler: Callable[[BusMessage], None]) -> Callable[[BusMessage], None]:
        outbox = self._outbox

        def deliver(msg: BusMessage) -> None:
            outbox.hold()
            try:
                handler(msg)
            except Exception:  # the top of a shell's receive path: log and go on
                self._log.exception("frame.crashed", subject=msg.subject)
            finally:
                outbox.release()

        return deliver

    async def _pump(self, sub: Subscription, handler: Callable[[BusMessage], None]) -> None:
        """Feed every frame of ``sub`` to ``handler``; what the machines send in answer goes out from this task,
        before the next read (no hop to the outbox's task)."""
        outbox = self._outbox
        async with sub:
            async for msg in sub:
                outbox.hold()
                try:
                    handler(msg)
                except Exception:  # the top of a shell loop: log and go on (never swallow cancellation)
                    self._log.exception("frame.crashed", subject=msg.subject)
                await outbox.flush()

    def _peek(self, msg: BusMessage, now: int) -> Opened:
        """Decode a frame without checking its signature: the envelope, then its publisher (the last token of
        the subject, spec 4.1), then the key's certificate, and only then the payload. A frame from a key this
        endpoint does not trust is refused before a byte of its payload is decoded."""
        return peek(msg.data, trust=self.trust, now_ns=now, publisher=msg.subject.rpartition(".")[2])

    def _open(self, msg: BusMessage, now: int, *, acted_on: bool, expect: Expect | None = None) -> Opened:
        """A frame as this endpoint may use it: verified in full (key, signature, then payload, then freshness)
        unless the bus authenticates publishers and the frame is not acted on alone (then only peeked)."""
        if self.authenticated_bus and not acted_on:
            return peek(
                msg.data, trust=self.trust, now_ns=now, expect=expect, publisher=msg.subject.rpartition(".")[2]
            )
        return open_frame(
            msg.data,
            self.trust,
            self.replay_guard,
            now,
            expect=expect,
            publisher=msg.subject.rpartition(".")[2],
        )

    def _limit_reached(self, limit: str, **context: object) -> None:
        """Count (and log, sparsely) one input refused because the bound named ``limit`` was reached."""
        self.limited[limit] += 1
        n = self.limited[limit]
        if sparse(n):
            self._log.warning("limit.reached", limit=limit, refused=n, **context)

    def _log_machine_refusal(self, event: object, exc: AccordError) -> None:
        """Count (as ``machine``) and log sparsely an event a machine raised on (a message its role never gets)."""
        self.refusals["machine"] += 1
        n = self.refusals["machine"]
        if sparse(n):
            self._log.warning("event.refused", kind=type(event).__name__, error=str(exc), refused=n)

    def _log_refusal(self, exc: AccordError, subject: str, *, quiet: bool = False, **context: object) -> None:
        """Count a refused frame by reason and log the 1st, 2nd, 4th... of each reason: replays (they happen on any
        at-least-once path) and ``quiet`` ones at debug level, anything else as a warning."""
        reason = str(getattr(exc, "reason", type(exc).__name__))
        self.refusals[reason] += 1
        n = self.refusals[reason]
        if not sparse(n):
            return
        log = self._log.debug if quiet or isinstance(exc, ReplayError) else self._log.warning
        log("frame.refused", subject=subject, error=str(exc), refused=n, **context)

    # --- sending ------------------------------------------------------------------------------------------------
    def _inbox_of(self, to: str) -> str:
        """``subjects.direct(to, self)``, validated once per peer (the cache is bounded)."""
        subject = self._inboxes.get(to)
        if subject is None:
            if len(self._inboxes) >= self.limits.peers:
                self._inboxes.clear()
            subject = self._inboxes[to] = subjects.direct(to, self.id)
        return subject

    # --- the NATS service protocol ------------------------------------------------------------------------------
    async def _register_as_service(
        self,
        *,
        description: str,
        metadata: Mapping[str, str],
        endpoints: Sequence[ServiceEndpoint],
        on_ping: Callable[[], None] | None = None,
    ) -> None:
        if not self._want_service or not isinstance(self.bus, ServiceHost):
            return
        try:
            self._service = await self.bus.add_service(
                self.service_name,
                accord.__version__,
                description=description,
                metadata=dict(metadata),
                endpoints=tuple(endpoints),
                stats=self.service_counts,
                on_ping=on_ping,
            )
        except BusError as exc:
            self._log.warning("service.unavailable", error=str(exc))

    async def _stop_service(self) -> None:
        """Leave the service protocol (shielded, bounded: also on the way out of a cancelled run)."""
        if self._service is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._service.stop()

    @property
    def service_id(self) -> str | None:
        """This endpoint's instance id in the NATS service protocol (None when the bus hosts no service)."""
        return self._service.id if self._service is not None else None


async def _hold_open(sub: Subscription) -> None:
    """Keep a listening subscription until cancelled; then unsubscribe."""
    async with sub:
        await anyio.sleep_forever()
