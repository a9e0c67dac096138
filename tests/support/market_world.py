"""A simulated mesh for the market machines: synchronous shells, a clock, and one FIFO queue per link.

The World plays every shell: it carries out the machines' actions (encodes messages to bytes and queues them on
the (sender, recipient) link, keeps timers, runs "executions" that take simulated time) and feeds deliveries,
timers and execution reports back as events. Faults are explicit method calls (drop, duplicate, reorder, delay,
partition, crash, ...), so a Hypothesis state machine or a unit test decides the schedule.

It also keeps the ground truth the safety invariants are checked against: every award sent, every result
accepted, every bid that was crafted ineligible or forged, who is trusted for what, and who bid on each task and
was not yet told that it lost (spec 5.9: when a task ends, ONE Cancel goes to all of them; a contractor that gets
it holds no slot for the task any more). From the bids each requester took and the rounds it announced, the world
judges every failure on its own: a task may fail (other than by deadline or cancel) only when its attempts are
used up, or when no untried agent's bid is eligible and no further round fits (spec 5.5).

``stats`` counts the cases the invariants are about, so a test can show they happen: Results delivered to a
completed task (``case:result_after_completion``), attempts ended by lease expiry and what followed
(``case:lease_expired``, ``case:reaward_after_lease``, ...), second-price awards whose price the budget capped
(``case:second_price_capped``).
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from accord.protocol.actions import (
    Abort,
    Accept,
    Action,
    AttemptEnded,
    Broadcast,
    CancelTimer,
    Execute,
    Fail,
    Multicast,
    Reject,
    RejectReason,
    ReportProgress,
    Send,
    SetTimer,
)
from accord.protocol.codec import decode, encode
from accord.protocol.contractor import ContractorMachine, ContractorProfile, JobState, prompt_tokens_of
from accord.protocol.digests import payload_digest
from accord.protocol.events import (
    CancelTask,
    Event,
    ExecutionDone,
    ExecutionFailed,
    Received,
    Recovered,
    Shutdown,
    Start,
    TimerFired,
    TimerKind,
    event_type,
)
from accord.protocol.market import (
    NS_PER_MS,
    Credentials,
    Offer,
    Reputation,
    ReputationPredictor,
    contradicts,
    rank,
    vickrey_price,
)
from accord.protocol.messages import (
    MAX_SKEW_NS,
    Advertise,
    Award,
    Bid,
    Cancel,
    Constraints,
    Mechanism,
    Message,
    ModelOffer,
    Privacy,
    ReasonCode,
    Result,
    Task,
    Tier,
    Withdraw,
)
from accord.protocol.pricing import ResourceModel
from accord.protocol.registry import Registry
from accord.protocol.requester import RequesterConfig, RequesterMachine, RequesterState, TaskSpec

BASE_NS = 1_700_000_000 * 10**9
MS = NS_PER_MS


def agent_id(name: str) -> str:
    """A deterministic, well-formed agent id (``U`` + 55 base32 characters) for a test name."""
    return "U" + base64.b32encode(hashlib.sha512(name.encode()).digest()).decode()[:55]


def model(
    name: str, *, tps: float, price_out: int, quality: float, ttft_ms: int = 5, slots: int = 1
) -> ResourceModel:
    offer = ModelOffer(
        name=name,
        context_window=32_000,
        tokens_per_s=tps,
        price_in_per_1k_micros=price_out // 4,
        price_out_per_1k_micros=price_out,
        quality=quality,
        ttft_ms=ttft_ms,
    )
    return ResourceModel.from_offer(offer, slots=slots)


CLOUD_EU: Final = Credentials(
    tier=Tier.CLOUD, region="eu", residency=frozenset({"eu"}), privacy=frozenset(Privacy)
)
"""A certificate for tests whose bidders claim to be cloud agents in the eu region (and are)."""


def credentials(profile: ContractorProfile) -> Credentials:
    """What an honest agent's certificate says: exactly its profile."""
    return Credentials(
        tier=profile.tier,
        region=profile.region,
        residency=frozenset(profile.residency),
        privacy=frozenset(profile.privacy),
    )


_ALL_PRIVACY = (Privacy.PUBLIC, Privacy.INTERNAL, Privacy.CONFIDENTIAL)

PROFILES: tuple[tuple[ContractorProfile, float], ...] = (
    # (profile, slowness: how much longer than its estimate the execution really takes)
    (
        ContractorProfile(
            name="cloud-eu",
            tier=Tier.CLOUD,
            region="eu",
            residency=("eu",),
            privacy=_ALL_PRIVACY,
            models=(model("big", tps=2000.0, price_out=4000, quality=0.85, slots=2),),
            slots=2,
            bid_hold_ms=300,
            ttl_ms=3000,
        ),
        1.0,
    ),
    (
        ContractorProfile(
            name="cloud-us",
            tier=Tier.CLOUD,
            region="us",
            residency=("us",),
            privacy=_ALL_PRIVACY,
            models=(model("huge", tps=1500.0, price_out=8000, quality=0.92),),
            bid_hold_ms=300,
            ttl_ms=3000,
        ),
        1.0,
    ),
    (
        ContractorProfile(
            name="edge-eu",
            tier=Tier.EDGE,
            region="eu",
            residency=("eu",),
            models=(model("mid", tps=800.0, price_out=800, quality=0.7),),
            bid_hold_ms=300,
            ttl_ms=3000,
        ),
        1.0,
    ),
    (
        ContractorProfile(
            name="device",
            tier=Tier.DEVICE,
            region="eu",
            residency=("eu", "us"),
            privacy=_ALL_PRIVACY,
            models=(model("tiny", tps=300.0, price_out=0, quality=0.5),),
            bid_hold_ms=300,
            ttl_ms=3000,
        ),
        1.0,
    ),
    (
        ContractorProfile(
            name="cloud-slow",
            tier=Tier.CLOUD,
            region="eu",
            residency=("eu", "us"),
            models=(model("slowpoke", tps=2500.0, price_out=1000, quality=0.9),),
            bid_hold_ms=300,
            ttl_ms=3000,
        ),
        6.0,  # promises fast answers, delivers after its lease
    ),
    (
        ContractorProfile(
            name="edge-us",
            tier=Tier.EDGE,
            region="us",
            residency=("us",),
            privacy=_ALL_PRIVACY,
            models=(  # one backend for both models: jobs in flight queue behind each other
                model("mid-us", tps=900.0, price_out=900, quality=0.72),
                model("small-us", tps=3000.0, price_out=200, quality=0.55),
            ),
            slots=3,
            bid_hold_ms=300,
            ttl_ms=3000,
        ),
        1.0,
    ),
)

RESIDENCIES: tuple[str | None, ...] = (None, "eu", "us")
TIER_PREFS: tuple[tuple[Tier, ...], ...] = ((), (Tier.CLOUD,), (Tier.EDGE, Tier.DEVICE))
PRIVACIES = (Privacy.PUBLIC, Privacy.CONFIDENTIAL)
MAX_PRICES = (1_000, 5_000, 50_000)


@dataclass
class ContractorNode:
    agent_id: str
    profile: ContractorProfile
    slowness: float
    rng: random.Random
    machine: ContractorMachine
    up: bool = True
    left: bool = False
    timers: dict[tuple[TimerKind, str], int] = field(default_factory=dict)
    executions: dict[tuple[str, int], int] = field(default_factory=dict)  # (task_id, attempt) -> finish ns


@dataclass
class RequesterNode:
    agent_id: str
    rng: random.Random
    reputation: Reputation = field(default_factory=Reputation)
    registry: Registry = field(default_factory=Registry)
    machines: dict[str, RequesterMachine] = field(default_factory=dict)
    timers: dict[tuple[str, TimerKind], int] = field(default_factory=dict)
    snapshots: dict[str, bytes] = field(default_factory=dict)
    up: bool = True
    restarted_ns: int = 0


@dataclass
class TaskRecord:
    task_id: str
    requester: str
    constraints: Constraints
    mechanism_asked: str
    window_ms: int = 50
    terminal_ns: int | None = None
    outcome: str = ""


class World:
    """The mesh. All randomness comes from ``seed``; every decision that matters comes from the caller."""

    def __init__(self, *, seed: int = 0, config: RequesterConfig | None = None, check_wire: bool = True) -> None:
        self.now = BASE_NS
        self.rng = random.Random(seed)
        self.config = config or RequesterConfig(
            ack_timeout_ms=100, lease_margin_ms=100, shortlist_k=2, max_attempts=4, min_exec_ms=40
        )
        self.check_wire = check_wire
        self.requesters: dict[str, RequesterNode] = {}
        self.contractors: dict[str, ContractorNode] = {}
        self.links: dict[tuple[str, str], deque[tuple[bytes, bool]]] = {}
        self.delayed: list[tuple[int, str, str, bytes, bool]] = []
        self.cut: set[frozenset[str]] = set()
        self.forged: set[str] = set()  # digests of forged bids
        self.crafted_ineligible: set[str] = set()  # ids of bids crafted to break an eligibility rule
        self.certs: dict[str, Credentials] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self.bids_seen: dict[str, Bid] = {}
        self.adverts_seen: dict[str, Advertise] = {}
        self.awards: dict[tuple[str, int], Award] = {}
        self.accepted: dict[str, list[Accept]] = {}
        self.outcomes: dict[tuple[str, int], bool] = {}
        self.faults: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.max_lateness_ns = 0
        self.violations: list[str] = []
        self.owed: dict[str, set[str]] = {}  # task -> bidders the requester recorded and has not told yet
        self.bid_ids: dict[str, set[str]] = {}  # task -> ids of the bids its requester recorded
        self.offered: dict[str, set[str]] = {}  # task -> ids of the bids its requester took as offers
        self.announces: Counter[str] = Counter()  # task -> bid rounds its requester announced
        self.results_delivered: deque[tuple[str, str, bytes]] = deque(maxlen=32)  # (src, dst, frame) to requesters

    # --- membership ---------------------------------------------------------------------------------------------
    def add_requester(self, name: str) -> RequesterNode:
        node = RequesterNode(agent_id(name), random.Random(self.rng.getrandbits(64)))
        self.requesters[node.agent_id] = node
        self.certs[node.agent_id] = Credentials(tier=Tier.EDGE, region="local", privacy=frozenset())
        return node

    def add_contractor(
        self, name: str, profile: ContractorProfile, slowness: float = 1.0, *, cert: Credentials | None = None
    ) -> ContractorNode:
        """``cert``: what its certificate says, when it is not its profile (a liar: every requester refuses it)."""
        aid = agent_id(name)
        rng = random.Random(self.rng.getrandbits(64))
        node = ContractorNode(aid, profile, slowness, rng, ContractorMachine(aid, profile, rng=rng))
        self.contractors[aid] = node
        self.certs[aid] = cert if cert is not None else credentials(profile)
        self._run_contractor(node, Start())
        return node

    def credentials(self, agent: str) -> Credentials | None:
        return self.certs.get(agent)

    def certified_for(self, agent: str, c: Constraints) -> bool:
        """Ground truth of spec 6.1 rules 2-6 by the certificate alone (never by what the agent claims)."""
        cert = self.certs.get(agent)
        return (
            cert is not None
            and (c.residency is None or c.residency in cert.residency)
            and (c.privacy is Privacy.PUBLIC or c.privacy in cert.privacy)
            and (not c.preferred_tiers or cert.tier in c.preferred_tiers)
        )

    # --- tasks --------------------------------------------------------------------------------------------------
    def announce(self, requester: str, spec: TaskSpec) -> str:
        node = self.requesters[requester]
        machine = self._new_requester_machine(node, spec)
        tid = machine.task_id
        node.machines[tid] = machine
        self.tasks[tid] = TaskRecord(tid, requester, spec.constraints, spec.mechanism.value, spec.bid_window_ms)
        self._run_requester(node, tid, Start())
        return tid

    def _new_requester_machine(self, node: RequesterNode, spec: TaskSpec) -> RequesterMachine:
        return RequesterMachine(
            node.agent_id,
            spec,
            rng=node.rng,
            credentials=self.credentials,
            verify_bid=self.verify_bid,
            registry=node.registry,
            predictor=ReputationPredictor(node.reputation),
            config=self.config,
        )

    def verify_bid(self, bid_id: str, digest: str) -> bool:
        self.stats["verify_calls"] += 1
        return digest not in self.forged

    def cancel(self, task_id: str) -> bool:
        rec = self.tasks[task_id]
        node = self.requesters[rec.requester]
        m = node.machines.get(task_id)
        if m is None or m.is_terminal or not node.up:
            return False
        self._run_requester(node, task_id, CancelTask())
        return True

    # --- running the machines (the shells) ----------------------------------------------------------------------
    def _run_requester(self, node: RequesterNode, task_id: str, event: Event) -> None:
        machine = node.machines[task_id]
        was_live = not machine.is_terminal
        actions = machine.handle(event, now=self.now)
        node.snapshots[task_id] = machine.snapshot()  # persisted before the actions are carried out
        self.stats["requester_events"] += 1
        self._track_losers(machine, event, actions, was_live)
        self._track_offers(task_id, event, actions, was_live)
        if not was_live and not all(isinstance(a, Reject) for a in actions):
            self.violations.append(f"task {task_id} ended, yet {event_type(event).name} made it act: {actions}")
        self._count_cases(node, machine, event, actions, was_live)
        self._execute(node.agent_id, actions, requester=node, task_id=task_id)
        for a in actions:
            if isinstance(a, Fail):
                self._check_gave_up_rightly(a, event)

    def _track_offers(self, task_id: str, event: Event, actions: list[Action], was_live: bool) -> None:
        """The bids the requester took as offers (no Reject for them) and the rounds it announced."""
        bid = event.message if was_live and isinstance(event, Received) else None
        if isinstance(bid, Bid) and not any(isinstance(a, Reject) and a.message is bid for a in actions):
            self.offered.setdefault(task_id, set()).add(bid.id)
        for a in actions:
            if isinstance(a, Send | Multicast) and isinstance(a.message, Task):
                self.announces[task_id] += a.message.mechanism is not Mechanism.DIRECT

    def _tried(self, task_id: str, before: int | None = None) -> set[str]:
        """The agents awarded the task (in attempts before ``before``)."""
        return {aw.winner for (t, n), aw in self.awards.items() if t == task_id and (before is None or n < before)}

    def eligible_bids(self, task_id: str, tried: set[str]) -> list[Bid]:
        """The bids the requester holds that pass every eligibility rule now, judged here from the ground truth
        (forged ones excluded: verification drops them). Tasks with a quality floor are not judged (a quality
        prediction moves with the reputation, so an offer dropped earlier may pass now)."""
        c = self.tasks[task_id].constraints
        if c.min_quality > 0:
            return []
        out = []
        for bid_id in sorted(self.offered.get(task_id, ())):
            bid = self.bids_seen[bid_id]
            if (
                bid.sender not in tried
                and bid.id not in self.crafted_ineligible
                and payload_digest(encode(bid)) not in self.forged
                and bid.valid_until_ns > self.now
                and self.certified_for(bid.sender, c)
                and not contradicts(Offer.from_bid(bid, ""), self.certs[bid.sender])
                and bid.price_micros <= c.max_price_micros
                and self.now + bid.est_latency_ms * MS <= c.deadline_ns
            ):
                out.append(bid)
        return out

    def _check_gave_up_rightly(self, fail: Fail, event: Event) -> None:
        """Spec 5.5: an attempt that ends early (ack timeout, award reject, lease expiry, Failure) leads to the
        next eligible bid or another round while attempts, bids and time allow; a task fails only when none
        does. (A backoff timer that fires too late for a round fails the task whatever bids it holds: spec 5.4
        awards nothing during the pause.)"""
        if fail.reason in (ReasonCode.DEADLINE_EXCEEDED, ReasonCode.CANCELLED):
            return
        tid = fail.task_id
        rec = self.tasks[tid]
        cfg = self.config
        tried = self._tried(tid)
        if len(tried) >= cfg.max_attempts:
            return
        last_round = rec.constraints.deadline_ns - (rec.window_ms + cfg.min_exec_ms) * MS - 1
        if self.announces[tid] < cfg.max_announces and self.now <= last_round:
            self.violations.append(f"task {tid} failed ({fail.reason.value}) with time for another round")
            return
        if isinstance(event, TimerFired) and event.kind is TimerKind.REANNOUNCE:
            return
        held = self.eligible_bids(tid, tried)
        if held:
            self.violations.append(f"task {tid} failed ({fail.reason.value}) holding eligible bids {held}")

    def _count_cases(
        self, node: RequesterNode, machine: RequesterMachine, event: Event, actions: list[Action], was_live: bool
    ) -> None:
        """Count the cases the invariants are about (see the module docstring)."""
        stats = self.stats
        msg = event.message if isinstance(event, Received) else None
        if isinstance(msg, Result) and not was_live and machine.state is RequesterState.COMPLETED:
            duplicate = any(a.result.id == msg.id for a in self.accepted.get(machine.task_id, []))
            stats["case:result_after_completion"] += 1
            stats["case:result_after_completion:" + ("duplicate" if duplicate else "other")] += 1
        if any(isinstance(a, AttemptEnded) and a.reason is ReasonCode.LEASE_EXPIRED for a in actions):
            stats["case:lease_expired"] += 1
            if any(isinstance(a, Send) and isinstance(a.message, Award) for a in actions):
                stats["case:reaward_after_lease"] += 1
            elif any(isinstance(a, Fail) for a in actions):
                stats["case:failed_after_lease"] += 1
            else:
                stats["case:new_round_after_lease"] += 1
        for a in actions:
            if isinstance(a, Send) and isinstance(a.message, Award) and a.message.bid_id in self.bids_seen:
                self._count_second_price(node, machine, a.message)

    def _count_second_price(self, node: RequesterNode, machine: RequesterMachine, award: Award) -> None:
        """A second-price award whose runner-up sets a price above the budget: the cap must bind."""
        if machine.task.mechanism is not Mechanism.SECOND_PRICE:
            return
        self.stats["case:second_price_award"] += 1
        tid = award.task_id
        bids = (self.bids_seen[b] for b in sorted(self.offered.get(tid, ())))
        offers = [Offer.from_bid(b, d) for b in bids if (d := payload_digest(encode(b))) not in self.forged]
        predictor = ReputationPredictor(node.reputation)
        tried = self._tried(tid, before=award.attempt)
        ranking = rank(
            offers, machine.task, now=self.now, credentials=self.credentials, predictor=predictor, exclude=tried
        )
        if len(ranking.eligible) < 2 or ranking.eligible[0].offer.bid_id != award.bid_id:
            return
        unbounded = msgspec.structs.replace(
            machine.task,
            constraints=msgspec.structs.replace(machine.task.constraints, max_price_micros=2**62),
        )
        if vickrey_price(ranking.eligible[0], ranking.eligible[1], unbounded) > award.price_micros:
            self.stats["case:second_price_capped"] += 1

    _NOT_RECORDED = frozenset(
        {
            RejectReason.DUPLICATE,
            RejectReason.EXPIRED,
            RejectReason.TOO_MANY,
            RejectReason.UNKNOWN_TASK,
            RejectReason.TERMINAL,
        }
    )

    def _track_losers(
        self, machine: RequesterMachine, event: Event, actions: list[Action], was_live: bool
    ) -> None:
        """Spec 5.9, checked from the outside: which bidders a requester owes a Cancel, and that the one it sends
        when the task ends reaches all of them (and nobody else but the current awardee)."""
        tid = machine.task_id
        owed = self.owed.setdefault(tid, set())
        seen = self.bid_ids.setdefault(tid, set())
        if isinstance(event, Received) and isinstance(event.message, Bid) and was_live:
            bid = event.message
            refused = {a.reason for a in actions if isinstance(a, Reject) and a.message is bid}
            late = RejectReason.LATE in refused
            if not refused & self._NOT_RECORDED and not (
                late and (bid.valid_until_ns <= self.now or bid.id in seen)
            ):
                owed.add(bid.sender)
                seen.add(bid.id)
        final: list[tuple[str, ...]] = []
        for a in actions:
            if isinstance(a, Send) and isinstance(a.message, Cancel):
                if a.message.attempt is None:
                    self.violations.append(f"task {tid}: a task-wide Cancel sent to one agent, not multicast")
                elif isinstance(a.to, str):
                    owed.discard(a.to)
            elif isinstance(a, Multicast) and isinstance(a.message, Cancel):
                final.append(a.to)
        if not (was_live and machine.is_terminal):
            if final:
                self.violations.append(f"task {tid}: a task-wide Cancel before the task ended")
            return
        if len(final) > 1:
            self.violations.append(f"task {tid}: {len(final)} Cancel multicasts when it ended (one at most)")
        told = set(final[0]) if final else set()
        winner = next((a.result.sender for a in actions if isinstance(a, Accept)), None)
        missing = owed - told - {winner}
        if missing:
            self.violations.append(f"task {tid} ended without telling bidders {sorted(missing)}")
        awards = [aw for (t, _), aw in self.awards.items() if t == tid]
        awardee = max(awards, key=lambda aw: aw.attempt).winner if awards else None
        extra = told - owed - {awardee}
        if extra or winner in told:
            self.violations.append(f"task {tid}: Cancel sent to {sorted(extra | (told & {winner}))} who owed none")
        self.stats["losers_told"] += len(told)
        owed.clear()

    def _run_contractor(self, node: ContractorNode, event: Event) -> None:
        actions = node.machine.handle(event, now=self.now)
        self.stats["contractor_events"] += 1
        self._execute(node.agent_id, actions, contractor=node)

    def _execute(
        self,
        src: str,
        actions: Iterable[Action],
        *,
        requester: RequesterNode | None = None,
        task_id: str = "",
        contractor: ContractorNode | None = None,
    ) -> None:
        for a in actions:
            if isinstance(a, Send):
                if isinstance(a.to, Broadcast):
                    self._broadcast(src, a.message)
                else:
                    self._enqueue(src, a.to, a.message)
            elif isinstance(a, Multicast):
                for to in a.to:
                    self._enqueue(src, to, a.message)
            elif isinstance(a, SetTimer):
                if requester is not None:
                    requester.timers[(task_id, a.kind)] = a.at_ns
                elif contractor is not None:
                    contractor.timers[(a.kind, a.task_id)] = a.at_ns
            elif isinstance(a, CancelTimer):
                if requester is not None:
                    requester.timers.pop((task_id, a.kind), None)
                elif contractor is not None:
                    contractor.timers.pop((a.kind, a.task_id), None)
            elif isinstance(a, Accept):
                self._on_accept(a)
            elif isinstance(a, Fail):
                rec = self.tasks[a.task_id]
                if rec.terminal_ns is not None:
                    self.violations.append(f"task {a.task_id} ended twice")
                rec.terminal_ns = self.now
                rec.outcome = a.reason.value
                self.stats[f"failed:{a.reason.value}"] += 1
            elif isinstance(a, AttemptEnded):
                assert requester is not None
                key = (a.task_id, a.attempt)
                if key in self.outcomes:
                    self.violations.append(f"two outcomes for attempt {key}")
                self.outcomes[key] = a.success
                if a.success:
                    requester.reputation.record_delivery(a.agent_id)
                else:
                    requester.reputation.record_failure(a.agent_id)
            elif isinstance(a, Execute):
                assert contractor is not None
                self._start_execution(contractor, a)
            elif isinstance(a, Abort):
                assert contractor is not None
                contractor.executions.pop((a.task_id, a.attempt), None)
            elif isinstance(a, Reject):
                self.stats[f"rejected:{a.reason.value}"] += 1
            elif isinstance(a, ReportProgress):
                self.stats["progress"] += 1

    def _start_execution(self, node: ContractorNode, a: Execute) -> None:
        resources = next(m for m in node.machine.models if m.name == a.model)
        prompt = prompt_tokens_of(a.task)
        latency = resources.estimate_latency_ms(prompt, a.task.max_output_tokens) + node.profile.overhead_ms
        node.executions[(a.award.task_id, a.award.attempt)] = self.now + int(latency * node.slowness) * MS

    def _on_accept(self, a: Accept) -> None:
        rec = self.tasks[a.task_id]
        self.accepted.setdefault(a.task_id, []).append(a)
        if rec.terminal_ns is not None:
            self.violations.append(f"task {a.task_id} accepted after it ended")
        rec.terminal_ns = self.now
        rec.outcome = "completed"
        self.stats["completed"] += 1
        r = a.result
        latest = max(att for (tid, att) in self.awards if tid == a.task_id)
        award = self.awards.get((a.task_id, r.attempt))
        if award is None or r.attempt != latest:
            self.violations.append(f"result of attempt {r.attempt} accepted, latest award is {latest}")
        elif r.sender != award.winner or r.award_id != award.id or a.award.id != award.id:
            self.violations.append(f"result from {r.sender} accepted, awardee was {award.winner}")
        if a.price_micros > rec.constraints.max_price_micros:
            self.violations.append(f"paid {a.price_micros} > budget {rec.constraints.max_price_micros}")

    def _on_award_sent(self, award: Award) -> None:
        key = (award.task_id, award.attempt)
        old = self.awards.get(key)
        if old is not None and old.id != award.id:
            self.violations.append(f"two awards for attempt {key}")
        self.awards[key] = award
        self.stats["awards"] += 1
        rec = self.tasks[award.task_id]
        c = rec.constraints
        if award.price_micros > c.max_price_micros:
            self.violations.append(f"award price {award.price_micros} over budget {c.max_price_micros}")
        if award.bid_id in self.crafted_ineligible or award.bid_digest in self.forged:
            self.violations.append(f"crafted ineligible or forged bid {award.bid_id} won")
        if not self.certified_for(award.winner, c):
            self.violations.append(f"untrusted, uncertified or misclaiming {award.winner} won")
        cert = self.certs.get(award.winner)
        winner = self.contractors.get(award.winner)
        if (
            cert is not None
            and winner is not None
            and (winner.profile.tier, winner.profile.region)
            != (
                cert.tier,
                cert.region,
            )
        ):
            self.violations.append(f"{award.winner} won although its claims contradict its certificate")
        bid = self.bids_seen.get(award.bid_id)
        if bid is not None:
            if bid.sender != award.winner or bid.task_id != award.task_id:
                self.violations.append("award names a bid of another agent or task")
            if payload_digest(encode(bid)) != award.bid_digest:
                self.violations.append("award binds the wrong bid digest")
            if c.residency is not None and c.residency not in bid.residency:
                self.violations.append("bid without the residency class won")
            if c.preferred_tiers and bid.tier not in c.preferred_tiers:
                self.violations.append("bid of a tier not preferred won")
            if bid.price_micros > c.max_price_micros:
                self.violations.append("bid over budget won")
            if award.price_micros < bid.price_micros:
                self.violations.append(f"award pays {award.price_micros}, less than the bid {bid.price_micros}")
            expired = bid.valid_until_ns + MAX_SKEW_NS <= award.ts  # the bidder's clock (spec 9.3)
            if award.ts + bid.est_latency_ms * MS > c.deadline_ns or expired:
                self.violations.append("bid too slow or expired won")
        elif award.bid_id in self.adverts_seen:  # direct award from a price sheet
            adv = self.adverts_seen[award.bid_id]
            if adv.sender != award.winner:
                self.violations.append("direct award names another agent's price sheet")
        else:
            self.violations.append(f"award names an unknown bid {award.bid_id}")

    # --- network ------------------------------------------------------------------------------------------------
    def _record_sent(self, message: Message) -> None:
        if isinstance(message, Bid):
            self.bids_seen[message.id] = message
        elif isinstance(message, Advertise):
            self.adverts_seen[message.id] = message
        elif isinstance(message, Award):
            self._on_award_sent(message)

    def _broadcast(self, src: str, message: Message) -> None:
        self._record_sent(message)
        data = encode(message)
        if isinstance(message, Task):
            targets: Iterable[str] = [a for a, n in self.contractors.items() if not n.left and a != src]
        else:
            targets = list(self.requesters)
        for dst in targets:
            self.links.setdefault((src, dst), deque()).append((data, True))
        self.stats["sent"] += 1

    def _enqueue(self, src: str, dst: str, message: Message) -> None:
        self._record_sent(message)
        self.links.setdefault((src, dst), deque()).append((encode(message), False))
        self.stats["sent"] += 1

    def inject(self, src: str, dst: str, message: Message) -> None:
        """Put a crafted message on a link, as if ``src`` had sent it."""
        self._enqueue(src, dst, message)

    def busy_links(self) -> list[tuple[str, str]]:
        return sorted(k for k, q in self.links.items() if q)

    def pending(self) -> int:
        return sum(len(q) for q in self.links.values())

    def deliver(self, link: tuple[str, str]) -> bool:
        q = self.links.get(link)
        if not q:
            return False
        data, broadcast = q.popleft()
        src, dst = link
        if frozenset(link) in self.cut:
            self.faults["lost_in_partition"] += 1
            return True
        self._deliver_bytes(src, dst, data, broadcast)
        return True

    def _deliver_bytes(self, src: str, dst: str, data: bytes, broadcast: bool) -> None:
        message = decode(data)  # every frame the machines send must pass the receivers' validation
        digest = payload_digest(data)
        self.stats["delivered"] += 1
        rnode = self.requesters.get(dst)
        if rnode is not None:
            if isinstance(message, Result):
                self.results_delivered.append((src, dst, data))
            if not rnode.up:
                self.faults["lost_at_crashed_node"] += 1
                return
            if isinstance(message, Advertise):
                rnode.registry.observe(message, now=self.now, digest=digest)
                return
            if isinstance(message, Withdraw):
                rnode.registry.withdraw(message, now=self.now)
                return
            tid = getattr(message, "task_id", None)
            if tid is None or tid not in rnode.machines:
                self.stats["unroutable"] += 1
                return
            self._run_requester(rnode, tid, Received(message, digest))
            return
        cnode = self.contractors.get(dst)
        if cnode is None or not cnode.up or cnode.left:
            self.faults["lost_at_crashed_node"] += 1
            return
        if isinstance(message, Advertise | Withdraw):
            return
        self._run_contractor(cnode, Received(message, digest, broadcast=broadcast))
        rec = self.tasks.get(message.task_id) if isinstance(message, Cancel) else None
        if isinstance(message, Cancel) and rec is not None and message.sender == rec.requester:
            # spec 5.9: once the requester's Cancel is delivered, the contractor holds no slot for the task
            state = cnode.machine.job_state(message.task_id)
            if message.attempt is None and state in (JobState.BIDDING, JobState.RUNNING):
                self.violations.append(
                    f"{cnode.profile.name} still {state.value} on {message.task_id} after Cancel"
                )
            if message.attempt is None:
                self.stats["task_cancels_delivered"] += 1

    def deliver_all(self, limit: int = 100_000) -> int:
        """Deliver until every queue is empty (round robin over links); the number delivered."""
        n = 0
        while n < limit:
            progressed = False
            for link in self.busy_links():
                if self.deliver(link):
                    n += 1
                    progressed = True
            if not progressed:
                break
        return n

    # --- faults -------------------------------------------------------------------------------------------------
    def drop(self, link: tuple[str, str]) -> bool:
        q = self.links.get(link)
        if not q:
            return False
        q.popleft()
        self.faults["drop"] += 1
        return True

    def duplicate(self, link: tuple[str, str]) -> bool:
        q = self.links.get(link)
        if not q:
            return False
        q.appendleft(q[0])
        self.faults["duplicate"] += 1
        return True

    def reorder(self, link: tuple[str, str], i: int) -> bool:
        q = self.links.get(link)
        if not q or len(q) < 2:
            return False
        j = 1 + i % (len(q) - 1)
        q[0], q[j] = q[j], q[0]
        self.faults["reorder"] += 1
        return True

    def redeliver(self, i: int) -> bool:
        """Deliver again one of the last Results delivered to a requester (at-least-once delivery: a copy that
        comes back late, after its task may have ended)."""
        if not self.results_delivered:
            return False
        src, dst, data = self.results_delivered[i % len(self.results_delivered)]
        self.links.setdefault((src, dst), deque()).append((data, False))
        self.faults["redeliver"] += 1
        return True

    def delay(self, link: tuple[str, str], ms: int) -> bool:
        q = self.links.get(link)
        if not q:
            return False
        data, broadcast = q.popleft()
        self.delayed.append((self.now + ms * MS, link[0], link[1], data, broadcast))
        self.faults["delay"] += 1
        return True

    def partition(self, a: str, b: str) -> None:
        self.cut.add(frozenset((a, b)))
        self.faults["partition"] += 1

    def heal(self) -> None:
        if self.cut:
            self.faults["heal"] += 1
        self.cut.clear()

    def crash_contractor(self, aid: str) -> None:
        node = self.contractors[aid]
        node.up = False
        node.timers.clear()
        node.executions.clear()
        self.faults["agent_crash"] += 1

    def restart_contractor(self, aid: str) -> None:
        node = self.contractors[aid]
        node.machine = ContractorMachine(aid, node.profile, rng=node.rng)
        node.up = True
        self.faults["agent_restart"] += 1
        self._run_contractor(node, Start())

    def leave(self, aid: str) -> None:
        node = self.contractors[aid]
        self._run_contractor(node, Shutdown())
        node.left = True
        node.timers.clear()
        node.executions.clear()
        self.faults["agent_leave"] += 1

    def crash_requester(self, aid: str) -> None:
        """Crash: the in-memory machines and the shell's timers are lost; the snapshots (KV) survive."""
        node = self.requesters[aid]
        node.up = False
        node.machines.clear()
        node.timers.clear()
        node.registry = Registry()
        self.faults["requester_crash"] += 1

    def restart_requester(self, aid: str) -> None:
        node = self.requesters[aid]
        node.up = True
        node.restarted_ns = self.now
        self.faults["requester_restart"] += 1
        for tid, snap in node.snapshots.items():
            machine = RequesterMachine.restore(
                snap,
                rng=node.rng,
                credentials=self.credentials,
                verify_bid=self.verify_bid,
                registry=node.registry,
                predictor=ReputationPredictor(node.reputation),
                config=self.config,
            )
            if machine.snapshot() != snap:
                self.violations.append("snapshot does not round-trip")
            node.machines[tid] = machine
            self._run_requester(node, tid, Recovered())

    # --- time ---------------------------------------------------------------------------------------------------
    def _next_due(self, until: int) -> tuple[int, int, object] | None:
        """The earliest (at, order, item) among timers, executions and delayed frames due by ``until``."""
        best: tuple[int, int, object] | None = None
        for node in self.requesters.values():
            if not node.up:
                continue
            for (tid, kind), at in node.timers.items():
                if at <= until and (best is None or at < best[0]):
                    best = (at, 0, ("r", node.agent_id, tid, kind))
        for cnode in self.contractors.values():
            if not cnode.up or cnode.left:
                continue
            for (kind, tid), at in cnode.timers.items():
                if at <= until and (best is None or at < best[0]):
                    best = (at, 1, ("c", cnode.agent_id, tid, kind))
            for (tid, attempt), at in cnode.executions.items():
                if at <= until and (best is None or at < best[0]):
                    best = (at, 2, ("x", cnode.agent_id, tid, attempt))
        for i, (at, *_rest) in enumerate(self.delayed):
            if at <= until and (best is None or at < best[0]):
                best = (at, 3, ("d", i))
        return best

    def advance(self, ms: int, *, on_time: bool = True) -> None:
        """Move the clock ``ms`` forward, firing what falls due in time order.

        ``on_time=False`` models a stalled shell: the clock jumps first and everything due fires late.
        """
        target = self.now + ms * MS
        if not on_time:
            self.max_lateness_ns = max(self.max_lateness_ns, ms * MS)
            self.now = target
        while True:
            nxt = self._next_due(target)
            if nxt is None:
                break
            self.now = max(self.now, nxt[0])
            self._fire(nxt[2])
        self.now = target

    def advance_to_next(self, horizon_ms: int = 60_000) -> bool:
        """Jump to the next due item (on time) and fire it; False if nothing is due within the horizon."""
        nxt = self._next_due(self.now + horizon_ms * MS)
        if nxt is None:
            return False
        self.now = max(self.now, nxt[0])
        self._fire(nxt[2])
        return True

    def _fire(self, item: object) -> None:
        assert isinstance(item, tuple)
        tag = item[0]
        if tag == "r":
            _, aid, tid, kind = item
            node = self.requesters[aid]
            del node.timers[(tid, kind)]
            self._run_requester(node, tid, TimerFired(kind, tid))
        elif tag == "c":
            _, aid, tid, kind = item
            cnode = self.contractors[aid]
            del cnode.timers[(kind, tid)]
            self._run_contractor(cnode, TimerFired(kind, tid))
        elif tag == "x":
            _, aid, tid, attempt = item
            cnode = self.contractors[aid]
            del cnode.executions[(tid, attempt)]
            self._run_contractor(cnode, ExecutionDone(tid, attempt, f"answer from {cnode.profile.name}"))
        else:
            _, i = item
            _, src, dst, data, broadcast = self.delayed.pop(i)
            self.links.setdefault((src, dst), deque()).append((data, broadcast))

    def fail_execution(self, aid: str) -> bool:
        cnode = self.contractors[aid]
        if not cnode.executions:
            return False
        (tid, attempt) = min(cnode.executions)
        del cnode.executions[(tid, attempt)]
        self.faults["backend_error"] += 1
        self._run_contractor(cnode, ExecutionFailed(tid, attempt))
        return True

    def hang_execution(self, aid: str) -> bool:
        """The backend of one running job never returns: no result, no failure (the requester's lease ends it)."""
        cnode = self.contractors[aid]
        if not cnode.executions:
            return False
        del cnode.executions[min(cnode.executions)]
        self.faults["backend_hangs"] += 1
        return True

    # --- checks -------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """The safety invariants; raises AssertionError on the first violation."""
        assert not self.violations, self.violations
        for tid, acc in self.accepted.items():
            assert len(acc) <= 1, (tid, acc)
            paid = sum(a.price_micros for a in acc)
            assert paid <= self.tasks[tid].constraints.max_price_micros, (tid, paid)
        for rnode in self.requesters.values():
            for m in rnode.machines.values():
                m.check_invariants()
        for cnode in self.contractors.values():
            if cnode.up and not cnode.left:
                cnode.machine.check_invariants()
                assert 0 <= cnode.machine.used_slots <= cnode.profile.slots

    def slots_held_for_ended_tasks(self) -> int:
        """Bids still holding a slot for tasks that have ended (only a lost Cancel, or a bid made after the end,
        leaves one; it lapses at its ``valid_until_ns``)."""
        ended = {tid for tid, rec in self.tasks.items() if rec.terminal_ns is not None}
        return sum(
            1
            for n in self.contractors.values()
            if n.up and not n.left
            for tid in ended
            if n.machine.job_state(tid) is JobState.BIDDING
        )

    def live_tasks(self) -> list[str]:
        return [tid for tid, rec in self.tasks.items() if rec.terminal_ns is None]

    def settle(self, *, max_rounds: int = 100_000) -> None:
        """Faults stop: heal, restart everything down, release delayed frames, then deliver and advance the clock
        (timers on time) until every task is terminal."""
        self.cut.clear()
        for at, src, dst, data, broadcast in sorted(self.delayed, key=lambda d: d[0]):
            del at
            self.links.setdefault((src, dst), deque()).append((data, broadcast))
        self.delayed.clear()
        for aid, rnode in self.requesters.items():
            if not rnode.up:
                self.restart_requester(aid)
        for aid, cnode in self.contractors.items():
            if not cnode.up and not cnode.left:
                self.restart_contractor(aid)
        for _ in range(max_rounds):
            self.deliver_all()
            self.check()
            if not self.live_tasks():
                return
            if not self.advance_to_next():
                return

    def terminal_bound_ns(self, task_id: str) -> int:
        """The stated bound: terminal by max(deadline, the requester's last restart) + the worst timer lateness."""
        rec = self.tasks[task_id]
        restarted = self.requesters[rec.requester].restarted_ns
        return max(rec.constraints.deadline_ns, restarted) + self.max_lateness_ns


def constraints(
    now: int,
    *,
    deadline_ms: int,
    max_price: int,
    residency: str | None = None,
    tiers: tuple[Tier, ...] = (),
    privacy: Privacy = Privacy.PUBLIC,
    min_quality: float = 0.0,
) -> Constraints:
    return Constraints(
        deadline_ns=now + deadline_ms * MS,
        max_price_micros=max_price,
        min_quality=min_quality,
        residency=residency,
        privacy=privacy,
        preferred_tiers=list(tiers),
    )
