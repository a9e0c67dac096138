"""DeviceRequester: ask the mesh when it can be reached, answer with the local model when it cannot.

A device app embeds one next to its :class:`~accord.runtime.requester.Requester`::

    device = DeviceRequester(requester, backend=local_backend, journal=Journal(path), local_model=resources)
    async with anyio.create_task_group() as tg:
        await tg.start(requester.run)
        await tg.start(device.sync.run)          # publishes offline records when the link is back
        answer = await device.submit(spec)        # answer.offline tells which way it went

``submit`` goes to the mesh when the bus is connected and the deadline leaves time for a bid round. It answers
locally instead (spec/OFFLINE.md section 1) when the deadline still leaves the local model's estimated time and

- the bus is down when the task is submitted (``AnswerRoute.BUS_DOWN``);
- the link goes down during the mesh attempt and stays down for ``reconnect_grace_ms``, or is still down when
  only the local model's time is left (``LINK_LOST``: the attempt is cancelled);
- the requester fails with a bus error, or with ``no_bids`` / ``no_eligible_bids`` after the link was down during
  the attempt (``UNREACHABLE``);
- the bus is up but the deadline leaves no time for a bid round (``NO_TIME``).

A local answer is sealed and attested by the device (it is both requester and agent), verified with the same
checks an auditor makes, appended to the journal (fsync'd) and only then returned; the sync service publishes
it to JetStream when the link returns. Any other failure (a mesh ``TaskFailed`` while connected, a deadline
that the local model cannot meet) is raised as :class:`~accord.runtime.requester.TaskFailed`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from accord.backends.base import Backend, BackendError, CompletionRequest, with_system
from accord.bus.base import BusError
from accord.errors import LocalProtocolError
from accord.logs import get_logger
from accord.offline.journal import Journal, JournalError
from accord.offline.records import (
    AuditRecord,
    first_user_prompt,
    local_task,
    mesh_record,
    seal_local_answer,
    verify_record,
)
from accord.offline.sync import JournalSync, connectivity_probe
from accord.protocol.messages import ReasonCode, Result
from accord.protocol.pricing import ResourceModel, estimate_prompt_tokens
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import ProgressCallback, Requester, TaskFailed, TaskOutcome
from accord.runtime.timers import now_ns
from accord.security import SecurityError, VerifiedAttestation

__all__ = ["DEFAULT_SYSTEM_PROMPT", "AnswerRoute", "DeviceAnswer", "DeviceRequester"]

log = get_logger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly and accurately."

_UNREACHABLE_REASONS = frozenset({ReasonCode.NO_BIDS, ReasonCode.NO_ELIGIBLE_BIDS})
_POLL_S = 0.02


class AnswerRoute(enum.StrEnum):
    MESH = "mesh"
    BUS_DOWN = "bus_down"
    LINK_LOST = "link_lost"
    UNREACHABLE = "unreachable"
    NO_TIME = "no_time"


@dataclass(frozen=True, slots=True)
class DeviceAnswer:
    """What ``DeviceRequester.submit`` returns: a :class:`TaskOutcome`'s fields plus how it was answered."""

    task_id: str
    answer: str
    agent_id: str
    model: str
    price_micros: int
    latency_ms: float
    attempt: int
    result: Result
    attestation: VerifiedAttestation
    offline: bool
    """True when the device answered with its local model (the mesh was not reachable)."""
    route: AnswerRoute
    record_id: str | None
    """The journal record of this answer (always for offline answers; for mesh answers with ``journal_mesh``)."""


class DeviceRequester:
    """The device's way to ask (see the module docstring)."""

    def __init__(
        self,
        requester: Requester,
        *,
        backend: Backend,
        journal: Journal,
        local_model: ResourceModel | None = None,
        local_latency_ms: Callable[[TaskSpec], int] | None = None,
        connected: Callable[[], bool] | None = None,
        sync: JournalSync | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        margin_ms: int = 100,
        reconnect_grace_ms: int = 250,
        journal_mesh: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        """``local_model`` (or ``local_latency_ms``) estimates how long the local backend takes for a task; with
        neither the estimate is 0 (any time left is enough). ``connected`` defaults to ``bus.is_connected``.
        ``sync`` defaults to a :class:`JournalSync` on the requester's bus. ``journal_mesh``: journal (and sync)
        mesh answers too, not only offline ones."""
        self.requester = requester
        self.identity = requester.identity
        self.id = requester.id
        self.trust = requester.trust
        self.backend = backend
        self.journal = journal
        self.local_model = local_model
        self._local_latency_ms = local_latency_ms
        self.connected = connected if connected is not None else connectivity_probe(requester.bus)
        if sync is None:
            sync = JournalSync(requester.bus, journal, self.id, connected=self.connected)
        self.sync = sync
        self.system_prompt = system_prompt
        self.margin_ms = margin_ms
        self.reconnect_grace_ms = reconnect_grace_ms
        self.journal_mesh = journal_mesh
        self._rng = rng if rng is not None else random.SystemRandom()
        self._log = log.bind(device=self.id)
        try:
            self.trust.check(self.id, now_ns())
        except SecurityError as exc:
            raise LocalProtocolError(
                f"the device {self.id} must be certified in its own trust store, so that its offline answers "
                f"verify: {exc}"
            ) from exc

    def estimate_local_ms(self, spec: TaskSpec) -> int:
        """The local model's estimated time for ``spec`` (from ``local_latency_ms`` or ``local_model``)."""
        if self._local_latency_ms is not None:
            return max(0, self._local_latency_ms(spec))
        if self.local_model is None:
            return 0
        prompt_tokens = spec.est_input_tokens or estimate_prompt_tokens(spec.messages)
        return self.local_model.estimate_latency_ms(prompt_tokens, spec.max_output_tokens)

    # --- the API ------------------------------------------------------------------------------------------------
    async def submit(self, spec: TaskSpec, *, on_progress: ProgressCallback | None = None) -> DeviceAnswer:
        """Answer ``spec`` through the mesh or, when it cannot be reached, locally (see the module docstring)."""
        deadline = spec.constraints.deadline_ns
        local_ms = self.estimate_local_ms(spec)
        if not self.connected():
            return await self._answer_locally(spec, AnswerRoute.BUS_DOWN, local_ms)
        left_ms = (deadline - now_ns()) / 1e6
        if left_ms < spec.bid_window_ms + self.requester.config.min_exec_ms and self._fits(deadline, local_ms):
            return await self._answer_locally(spec, AnswerRoute.NO_TIME, local_ms)
        return await self._via_mesh(spec, on_progress, local_ms)

    async def _via_mesh(self, spec: TaskSpec, on_progress: ProgressCallback | None, local_ms: int) -> DeviceAnswer:
        deadline = spec.constraints.deadline_ns
        latest_local_start = deadline - (local_ms + self.margin_ms) * 1_000_000
        disconnects = self.requester.bus.stats.disconnects
        outcome: TaskOutcome | None = None
        error: TaskFailed | BusError | None = None
        link_lost = False
        link_was_down = False

        async def watch_link(scope: anyio.CancelScope) -> None:
            nonlocal link_lost, link_was_down
            down_since: int | None = None
            while True:
                await anyio.sleep(_POLL_S)
                now = now_ns()
                if self.connected():
                    down_since = None
                    continue
                link_was_down = True
                down_since = now if down_since is None else down_since
                grace_over = now - down_since >= self.reconnect_grace_ms * 1_000_000
                if (grace_over or now >= latest_local_start) and self._fits(deadline, local_ms):
                    link_lost = True
                    scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_link, tg.cancel_scope)
            try:
                outcome = await self.requester.submit(spec, on_progress=on_progress)
            except (TaskFailed, BusError) as exc:
                error = exc
            tg.cancel_scope.cancel()

        if outcome is not None:
            return await self._mesh_answer(spec, outcome)
        if link_lost:
            self._log.info("offline.link_lost")
            return await self._answer_locally(spec, AnswerRoute.LINK_LOST, local_ms)
        assert error is not None
        unreachable = isinstance(error, BusError) or (
            error.reason in _UNREACHABLE_REASONS
            and (link_was_down or not self.connected() or self.requester.bus.stats.disconnects > disconnects)
        )
        if unreachable and self._fits(deadline, local_ms):
            self._log.info("offline.unreachable", error=str(error))
            try:
                return await self._answer_locally(spec, AnswerRoute.UNREACHABLE, local_ms)
            except TaskFailed as local_error:
                raise local_error from error
        raise error

    def _fits(self, deadline: int, local_ms: int) -> bool:
        return (deadline - now_ns()) / 1e6 >= local_ms + self.margin_ms

    async def _mesh_answer(self, spec: TaskSpec, outcome: TaskOutcome) -> DeviceAnswer:
        record_id: str | None = None
        if self.journal_mesh:
            record = mesh_record(
                self.id,
                outcome.result,
                prompt=first_user_prompt(spec.messages),
                kind=spec.kind,
                price_micros=outcome.price_micros,
                latency_ms=int(outcome.latency_ms),
                now=now_ns(),
            )
            try:
                await self._journal(record)
                record_id = record.id
            except JournalError as exc:  # the answer stands; only its optional record is lost
                self._log.warning("journal.mesh_record_dropped", task_id=outcome.task_id, error=str(exc))
        return DeviceAnswer(
            task_id=outcome.task_id,
            answer=outcome.answer,
            agent_id=outcome.agent_id,
            model=outcome.model,
            price_micros=outcome.price_micros,
            latency_ms=outcome.latency_ms,
            attempt=outcome.attempt,
            result=outcome.result,
            attestation=outcome.attestation,
            offline=False,
            route=AnswerRoute.MESH,
            record_id=record_id,
        )

    async def _answer_locally(self, spec: TaskSpec, route: AnswerRoute, local_ms: int) -> DeviceAnswer:
        started = now_ns()
        deadline = spec.constraints.deadline_ns
        task = local_task(self.identity, spec, rng=self._rng, now=started)
        left_ms = (deadline - started) / 1e6
        if left_ms < local_ms + self.margin_ms:
            raise TaskFailed(
                task.task_id,
                ReasonCode.DEADLINE_EXCEEDED,
                f"mesh unreachable ({route.value}) and the local model needs ~{local_ms} ms, "
                f"{max(0, int(left_ms))} ms left",
            )
        if not task.messages:
            raise TaskFailed(task.task_id, ReasonCode.OTHER, "prompt_ref is not supported for local answers")
        request = CompletionRequest(
            messages=with_system(task.messages, self.system_prompt),
            model=self.backend.model,
            max_tokens=spec.max_output_tokens,
            deadline_ns=deadline,
        )
        self._log.info("offline.answering", task_id=task.task_id, route=route.value, estimate_ms=local_ms)
        completion = None
        with anyio.move_on_after(max(0.0, (deadline - now_ns()) / 1e9)):
            try:
                completion = await self.backend.complete(request)
            except BackendError as exc:
                raise TaskFailed(task.task_id, exc.reason_code, str(exc)[:500]) from exc
        if completion is None:
            raise TaskFailed(task.task_id, ReasonCode.DEADLINE_EXCEEDED, "the local model did not finish in time")
        done = now_ns()
        sealed = seal_local_answer(
            self.identity,
            task,
            completion,
            backend=self.backend.name,
            latency_ms=(done - started) // 1_000_000,
            rng=self._rng,
            now=done,
        )
        verified = verify_record(sealed.record, self.trust, done)  # the auditor's checks, before it is kept
        await self._journal(sealed.record)
        return DeviceAnswer(
            task_id=task.task_id,
            answer=completion.text,
            agent_id=self.id,
            model=completion.model,
            price_micros=0,
            latency_ms=(done - started) / 1e6,
            attempt=1,
            result=sealed.result,
            attestation=verified,
            offline=True,
            route=route,
            record_id=sealed.record.id,
        )

    async def _journal(self, record: AuditRecord) -> None:
        await anyio.to_thread.run_sync(self.journal.append, record)
        self.sync.kick()
