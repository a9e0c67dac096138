"""The market under churn and faults: a Hypothesis RuleBasedStateMachine over the pure machines.

Each run builds a mesh (2 requesters, 2-4 contractors) on a simulated network with one FIFO queue per link
(tests/support/market_world.py) and applies 100 rules (``MARKET_STEPS``; 200 in the ``stateful-long`` profile):
announce, deliver, drop, duplicate, reorder, delay, partition/heal, a Result delivered again late, agent
join/leave/crash/restart, requester crash/restart (restore from the persisted snapshot), clock advance (on time or
stalled), backend failure or hang, user cancel, forged bids (the verification hook refuses them), crafted
ineligible bids (one broken eligibility rule each), silent bidders (one, or a pair near the budget whose second
price the budget must cap) and a second Result for a completed task (the awardee's retry, or an earlier
attempt's late answer).

Safety, after every step: at most one accepted result per task; it comes from the awardee of the latest attempt;
a task that ended does nothing but refuse; no crafted-ineligible or forged bid ever wins and every award passes
an independent eligibility re-check; every award pays at least the bid and at most the budget; a task fails
(other than by deadline or cancel) only when its attempts are used up or when no untried agent's bid is eligible
and no further round fits (so an expired lease re-awards or re-announces while it can); every machine's own
invariants (capacity in [0, slots] among them). Losers (spec 5.9): when a task ends, its requester sends ONE
Cancel multicast that reaches every bidder it recorded and has not told yet (except the agent whose result it
accepted) and nobody else but the current awardee; and a contractor that receives that Cancel holds no slot for
the task any more. The cases these guard (a Result for a completed task, a lease that expires, a second price
the budget caps) are counted, and each must come up in at least 1 % of the runs.

Liveness, at teardown: faults stop (heal, restart, release delayed frames), then the world delivers everything
and advances the clock; every task must end (completed, failed or cancelled) by its deadline, or by its
requester's restart if that came later, plus the worst timer lateness the run injected (``advance`` with
``on_time=False``): the bound of spec 5.7.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from typing import Final, NamedTuple

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accord.protocol.actions import new_message_id
from accord.protocol.codec import encode
from accord.protocol.digests import payload_digest
from accord.protocol.market import Credentials
from accord.protocol.messages import Bid, Constraints, Mechanism, Policy, Privacy, Tier
from accord.protocol.requester import RequesterState, TaskSpec
from tests.support.market_world import (
    MAX_PRICES,
    MS,
    PRIVACIES,
    PROFILES,
    RESIDENCIES,
    TIER_PREFS,
    World,
    agent_id,
    constraints,
)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_SIZES: Final = {"ci": (1_000, 100), "dev": (10_000, 100), "stateful-long": (2_000, 200)}
"""Runs and steps per run by profile; ``MARKET_RUNS`` and ``MARKET_STEPS`` override them. The reliability figure
(issue 15): ``HYPOTHESIS_PROFILE=stateful-long python -m pytest tests/stateful -s``, 2,000 runs x 200 steps."""
RUNS = int(os.environ.get("MARKET_RUNS", _SIZES.get(PROFILE, _SIZES["ci"])[0]))
STEPS = int(os.environ.get("MARKET_STEPS", _SIZES.get(PROFILE, _SIZES["ci"])[1]))
MAX_TASKS = 6
MAX_CONTRACTORS = 8

ROGUE_UNTRUSTED = agent_id("rogue-untrusted")
_EVERYWHERE: Final = frozenset({"eu", "us"})


def _cast(
    kind: str, residency: frozenset[str] = _EVERYWHERE, privacy: frozenset[Privacy] = frozenset(Privacy)
) -> dict[Tier, tuple[str, Credentials]]:
    """One certified agent per tier (certificates carry one tier): (its id, what its certificate says)."""
    return {
        tier: (
            agent_id(f"{kind}-{tier.value}"),
            Credentials(tier=tier, region="eu", residency=residency, privacy=privacy),
        )
        for tier in Tier
    }


PHANTOMS: Final = _cast("phantom")  # certified and eligible, but never answers an award
ROGUES: Final = _cast("rogue")  # their crafted bids break one other rule each
ROGUES_NO_RESIDENCY: Final = _cast("rogue-no-residency", residency=frozenset())
ROGUES_PUBLIC_ONLY: Final = _cast("rogue-public-only", privacy=frozenset({Privacy.PUBLIC}))

TOTALS: Counter[str] = Counter()


class TaskPreset(NamedTuple):
    who: int
    mechanism: Mechanism
    residency: str | None
    tiers: tuple[Tier, ...]
    privacy: Privacy
    deadline_ms: int
    max_price: int
    window_ms: int
    min_quality: float
    policy: Policy


MECHANISMS: Final = (*Mechanism, Mechanism.SECOND_PRICE)
"""Every mechanism; second price twice as often as the others (its payment is the one that depends on two bids
and the budget)."""
POLICIES: Final = (Policy(), Policy(lambda_price=400.0))
"""The default weights, under which a second price mostly exceeds any budget and the reserve applies; and a
price weight under which price differences of a few hundred micro-USD matter, so that the runner-up's price plus
the winner's advantage lands near the budget (the cap must hold)."""
TASKS: Final = [
    TaskPreset(*p)
    for p in itertools.product(
        (0, 1),
        MECHANISMS,
        RESIDENCIES,
        TIER_PREFS,
        PRIVACIES,
        (300, 800, 2_000, 5_000),
        MAX_PRICES,
        (50, 150, 400),
        (0.0, 0.6),
        POLICIES,
    )
]
PUMPS: Final = (8, 64, 100_000)  # 100_000: the network catches up (delivers all queued frames)
FAULTS: Final = (
    ("drop", 0),
    ("duplicate", 0),
    ("reorder", 1),
    ("reorder", 5),
    ("delay", 30),
    ("delay", 300),
    ("partition", 0),
    ("heal", 0),
    ("redeliver", 0),
    ("redeliver", 1),
)
ADVANCES: Final = (
    (1, True),
    (3, True),
    (10, True),
    (25, True),
    (60, True),
    (150, True),
    (15, False),
    (120, False),
)
CHURN: Final = ("join", "leave", "crash", "restart", "requester_crash", "requester_restart")
ADVERSARY: Final = (
    "bid",
    "bid_pair",
    "bid_pair",
    "forged_bid",
    "ineligible_bid",
    "cancel",
    "backend_fails",
    "backend_hangs",
    "second_result",
)

idx = st.integers(0, 1023)


def _tier_of(c: Constraints) -> Tier:
    """The tier a bid for a task with constraints ``c`` claims (its first preferred tier, else cloud)."""
    return c.preferred_tiers[0] if c.preferred_tiers else Tier.CLOUD


class MarketMachine(RuleBasedStateMachine):
    """Seven rules, several of which choose among operations: Hypothesis draws per-rule feature flags on every
    step, and twenty separate rules made a step twice as slow (and ran out of choice buffer before 100 steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(seed=0)
        self.steps = 0
        TOTALS["runs"] += 1

    def _count(self, name: str) -> None:
        self.steps += 1
        TOTALS["steps"] += 1
        TOTALS[f"rule:{name}"] += 1

    @initialize(picks=st.lists(st.integers(1, len(PROFILES) - 1), max_size=2, unique=True))
    def mesh(self, picks: list[int]) -> None:
        """Two requesters; contractors: always the EU cloud and the device (they can serve most tasks), plus up
        to two other profiles."""
        w = self.world
        w.add_requester("req-0")
        w.add_requester("req-1")
        for n, i in enumerate(sorted({0, 3, *picks})):
            profile, slowness = PROFILES[i]
            w.add_contractor(f"{profile.name}-{n}", profile, slowness)
        # phantoms and rogues hold certificates (one tier each); rogues' crafted bids break one other rule each
        for cast in (PHANTOMS, ROGUES, ROGUES_NO_RESIDENCY, ROGUES_PUBLIC_ONLY):
            for aid, cert in cast.values():
                w.certs[aid] = cert

    # --- announce -----------------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.world.tasks) < MAX_TASKS)
    @rule(task=st.sampled_from(TASKS))
    def announce(self, task: TaskPreset) -> None:
        self._count("announce")
        w = self.world
        requester = sorted(w.requesters)[task.who]
        if not w.requesters[requester].up:
            return
        spec = TaskSpec(
            constraints=constraints(
                w.now,
                deadline_ms=task.deadline_ms,
                max_price=task.max_price,
                residency=task.residency,
                tiers=task.tiers,
                privacy=task.privacy,
                min_quality=task.min_quality,
            ),
            est_input_tokens=200,
            max_output_tokens=100,
            mechanism=task.mechanism,
            bid_window_ms=task.window_ms,
            policy=task.policy,
        )
        w.announce(requester, spec)

    # --- network ------------------------------------------------------------------------------------------------
    def _link(self, i: int) -> tuple[str, str] | None:
        busy = self.world.busy_links()
        return busy[i % len(busy)] if busy else None

    @rule(i=idx)
    def deliver(self, i: int) -> None:
        """Deliver the head frame of one busy link."""
        self._count("deliver")
        link = self._link(i)
        if link is not None:
            self.world.deliver(link)

    @rule(n=st.sampled_from(PUMPS))
    def pump(self, n: int) -> None:
        """Deliver the head frames of the first n busy links in turn (a burst of traffic)."""
        self._count("pump")
        w = self.world
        for _ in range(n):
            busy = w.busy_links()
            if not busy:
                return
            w.deliver(busy[0])

    @rule(fault=st.sampled_from(FAULTS), i=idx)
    def network_fault(self, fault: tuple[str, int], i: int) -> None:
        """drop / duplicate / reorder / delay the head of a link; cut a requester-contractor link; heal all;
        deliver a Result again, late (after its task may have completed)."""
        op, arg = fault
        self._count(op)
        w = self.world
        if op == "redeliver":
            w.redeliver(i)
            return
        if op == "partition":
            contractors = sorted(w.contractors)
            w.partition(sorted(w.requesters)[i % 2], contractors[(i // 2) % len(contractors)])
            return
        if op == "heal":
            w.heal()
            return
        link = self._link(i)
        if link is None:
            return
        if op == "drop":
            w.drop(link)
        elif op == "duplicate":
            w.duplicate(link)
        elif op == "reorder":
            w.reorder(link, arg + i // 16)
        else:
            w.delay(link, arg + i % arg)

    # --- time ---------------------------------------------------------------------------------------------------
    @rule(step=st.sampled_from(ADVANCES))
    def advance(self, step: tuple[int, bool]) -> None:
        """Advance the clock; timers and executions fire on time, or late (a stalled shell) if not on_time."""
        ms, on_time = step
        self._count("advance")
        if not on_time:
            self.world.faults["late_timers"] += 1
        self.world.advance(ms, on_time=on_time)

    # --- membership ---------------------------------------------------------------------------------------------
    def _active(self) -> list[str]:
        return [a for a, n in sorted(self.world.contractors.items()) if n.up and not n.left]

    @rule(op=st.sampled_from(CHURN), i=idx)
    def churn(self, op: str, i: int) -> None:
        """Agents join, leave (Shutdown: Withdraw, running work failed), crash (state lost) and restart
        (a fresh machine); requesters crash (machines and timers lost) and restart (restore from snapshot)."""
        self._count(op)
        w = self.world
        if op == "join":
            if len(w.contractors) < MAX_CONTRACTORS:
                profile, slowness = PROFILES[i % len(PROFILES)]
                w.add_contractor(f"{profile.name}-{len(w.contractors)}", profile, slowness)
                w.faults["agent_join"] += 1
        elif op in ("leave", "crash"):
            active = self._active()
            if len(active) > 1:
                (w.leave if op == "leave" else w.crash_contractor)(active[i % len(active)])
        elif op == "restart":
            down = [a for a, n in sorted(w.contractors.items()) if not n.up and not n.left]
            if down:
                w.restart_contractor(down[i % len(down)])
        else:
            aid = sorted(w.requesters)[i % 2]
            node = w.requesters[aid]
            if op == "requester_crash" and node.up:
                w.crash_requester(aid)
            elif op == "requester_restart" and not node.up:
                w.restart_requester(aid)

    # --- adversaries and users ----------------------------------------------------------------------------------
    @rule(op=st.sampled_from(ADVERSARY), i=idx)
    def adversary(self, op: str, i: int) -> None:
        """Bids from silent agents, forged bids (the verification hook refuses them), crafted ineligible bids,
        user cancels, backend failures and hangs, a second Result for a completed task."""
        self._count(op)
        w = self.world
        if op in ("backend_fails", "backend_hangs"):
            busy = [a for a, n in sorted(w.contractors.items()) if n.up and n.executions]
            if busy:
                (w.fail_execution if op == "backend_fails" else w.hang_execution)(busy[i % len(busy)])
            return
        if op == "second_result":
            self._second_result(i)
            return
        live = w.live_tasks()
        if not live:
            return
        tid = live[i % len(live)]
        if op == "cancel":
            if w.cancel(tid):
                w.faults["user_cancel"] += 1
        elif op == "bid":
            # an eligible, well-signed bid from an agent that then never answers: if it wins, the award must
            # time out and go to the next bid; priced up to the budget, so that as a runner-up it sets a second
            # price the budget must cap
            c = w.tasks[tid].constraints
            phantom = PHANTOMS[_tier_of(c)][0]
            price = c.max_price_micros * (50, 90, 98, 100)[i % 4] // 100
            bid = self._bid_for(tid, phantom, price_micros=price, quality=0.75)
            w.inject(phantom, w.tasks[tid].requester, bid)
            w.faults["silent_bidder"] += 1
        elif op == "bid_pair":
            self._bid_pair(i)
        elif op == "forged_bid":
            honest = sorted(w.contractors)
            self._forged_bid(tid, honest[(i // 8) % len(honest)])
        else:
            self._ineligible_bid(tid, i // 8)

    def _bid_for(self, task_id: str, sender: str, **overrides: object) -> Bid:
        w = self.world
        c = w.tasks[task_id].constraints
        fields: dict[str, object] = {
            "id": new_message_id(w.rng),
            "sender": sender,
            "ts": w.now,
            "task_id": task_id,
            "model": "too-good",
            "price_micros": 0,
            "est_latency_ms": 1,
            "quality": 1.0,
            "valid_until_ns": c.deadline_ns,
            "tier": _tier_of(c),
            "region": "eu",
            "residency": [c.residency] if c.residency else [],
        }
        fields.update(overrides)
        return msgspec.convert(fields, Bid)

    def _bid_pair(self, i: int) -> None:
        """Two fresh silent bidders (no record yet, so they are predicted at their claims) into a round that is
        open, a second-price one if there is: the better claim at 90 % of the budget, the other at 98 %, with a
        quality gap small enough that the second price (the runner-up's price plus the winner's advantage in
        micro-USD) lands above the budget but below the point where the reserve applies anyway: only the cap
        keeps it within the budget."""
        w = self.world
        open_rounds = sorted(
            (w.tasks[tid].mechanism_asked != Mechanism.SECOND_PRICE, tid)
            for tid in w.live_tasks()
            if (m := w.requesters[w.tasks[tid].requester].machines.get(tid)) is not None
            and m.state in (RequesterState.ANNOUNCED, RequesterState.COLLECTING)
        )
        if not open_rounds:
            return
        best = [tid for other, tid in open_rounds if other == open_rounds[0][0]]
        tid = best[i % len(best)]
        rec = w.tasks[tid]
        budget = rec.constraints.max_price_micros
        # the runner-up's price plus the winner's advantage (gap * 1e6 / lambda micro-USD): a quarter budget over
        gap = min(0.5, w.requesters[rec.requester].machines[tid].task.policy.lambda_price * budget / 4e6)
        n = w.faults["silent_bidder_pair"]
        for role, share, quality in (("winner", 90, 0.99), ("runner-up", 98, 0.99 - gap)):
            sender = agent_id(f"phantom-{role}-{n}")
            w.certs[sender] = PHANTOMS[_tier_of(rec.constraints)][1]
            bid = self._bid_for(tid, sender, price_micros=budget * share // 100, quality=quality)
            w.inject(sender, rec.requester, bid)
            w.deliver((sender, rec.requester))  # at once, while the round is open
        w.faults["silent_bidder_pair"] += 1

    def _second_result(self, i: int) -> None:
        """A completed task gets another Result: from its awardee again (a retry with a new id), or from the
        awardee of an earlier attempt (a late answer). The requester must accept neither."""
        w = self.world
        done = [tid for tid, acc in sorted(w.accepted.items()) if acc]
        if not done:
            return
        tid = done[i % len(done)]
        accepted = w.accepted[tid][0].result
        earlier = [aw for (t, n), aw in sorted(w.awards.items()) if t == tid and n < accepted.attempt]
        result = accepted
        if earlier and i % 2:
            aw = earlier[(i // 2) % len(earlier)]
            result = msgspec.structs.replace(result, sender=aw.winner, attempt=aw.attempt, award_id=aw.id)
        result = msgspec.structs.replace(result, id=new_message_id(w.rng), ts=w.now)
        w.inject(result.sender, w.tasks[tid].requester, result)
        w.faults["second_result"] += 1

    def _forged_bid(self, tid: str, sender: str) -> None:
        """A frame claiming an honest agent's identity whose signature does not verify."""
        w = self.world
        bid = self._bid_for(tid, sender)
        w.forged.add(payload_digest(encode(bid)))
        w.inject(sender, w.tasks[tid].requester, bid)
        w.faults["forged_bid"] += 1

    def _ineligible_bid(self, tid: str, which: int) -> None:
        """A well-signed, very attractive bid that breaks exactly one eligibility rule."""
        w = self.world
        c = w.tasks[tid].constraints
        remaining_ms = max(0, (c.deadline_ns - w.now) // MS)
        tier = _tier_of(c)
        rogue = ROGUES[tier][0]
        options: list[tuple[str, str, dict[str, object]]] = [
            ("untrusted", ROGUE_UNTRUSTED, {}),
            ("budget", rogue, {"price_micros": c.max_price_micros + 1}),
            ("deadline", rogue, {"est_latency_ms": remaining_ms + 1_000}),
        ]
        if c.residency is not None:  # claims nothing; its certificate grants no residency class
            options.append(("residency", ROGUES_NO_RESIDENCY[tier][0], {"residency": []}))
        if c.privacy is not Privacy.PUBLIC:
            options.append(("privacy", ROGUES_PUBLIC_ONLY[tier][0], {}))
        if c.preferred_tiers:  # certified for another tier: honest about it (tier), or lying (claim)
            other = next(t for t in Tier if t not in c.preferred_tiers)
            options.append(("tier", ROGUES[other][0], {"tier": other}))
            options.append(("claim", ROGUES[other][0], {}))
        if c.min_quality > 0:
            options.append(("quality", rogue, {"quality": 0.0}))
        rule_name, sender, overrides = options[which % len(options)]
        bid = self._bid_for(tid, sender, **overrides)
        w.crafted_ineligible.add(bid.id)
        w.inject(sender, w.tasks[tid].requester, bid)
        w.faults[f"ineligible_bid:{rule_name}"] += 1

    # --- checks -------------------------------------------------------------------------------------------------
    @invariant()
    def safety(self) -> None:
        self.world.check()

    def teardown(self) -> None:
        w = self.world
        if not w.tasks and not w.requesters:
            return
        TOTALS["full_runs"] += self.steps >= STEPS
        w.settle()
        w.check()
        for tid, rec in w.tasks.items():
            assert rec.terminal_ns is not None, f"task {tid} never ended"
            bound = w.terminal_bound_ns(tid)
            assert rec.terminal_ns <= bound, (tid, rec.outcome, (rec.terminal_ns - bound) / MS)
            TOTALS[f"outcome:{rec.outcome}"] += 1
        TOTALS["tasks"] += len(w.tasks)
        TOTALS["awards"] += w.stats["awards"]
        TOTALS["verify_calls"] += w.stats["verify_calls"]
        TOTALS["delivered"] += w.stats["delivered"]
        TOTALS["losers_told"] += w.stats["losers_told"]
        TOTALS["task_cancels_delivered"] += w.stats["task_cancels_delivered"]
        TOTALS["held_after_end"] += w.slots_held_for_ended_tasks()
        for k, v in w.stats.items():
            if k.startswith("case:"):
                TOTALS[k] += v
                TOTALS[f"runs_with_{k}"] += v > 0
        for k, v in w.faults.items():
            TOTALS[f"fault:{k}"] += v
        for k, v in w.stats.items():
            if k.startswith("rejected:"):
                TOTALS[k] += v


SETTINGS = settings(
    max_examples=RUNS,
    stateful_step_count=STEPS + 1,  # Hypothesis counts the initialize rule as a step
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.timeout(900 if RUNS * STEPS <= 100_000 else 7_200)  # the suite's 300 s default is too tight for dev
def test_market_under_churn_and_faults(capsys: pytest.CaptureFixture[str]) -> None:
    TOTALS.clear()
    t0 = time.perf_counter()
    # _min_steps: every run takes all its steps (Hypothesis otherwise lets a mutated run stop early)
    run_state_machine_as_test(MarketMachine, settings=SETTINGS, _min_steps=STEPS + 1)
    elapsed = time.perf_counter() - t0
    runs, steps = TOTALS["runs"], TOTALS["steps"]
    with capsys.disabled():
        print(
            f"\nmarket stateful [{PROFILE}]: {runs} runs ({TOTALS['full_runs']} of {STEPS} steps), {steps} steps, "
            f"{steps / elapsed:,.0f} steps/s, {elapsed:.1f} s; {TOTALS['tasks']} tasks, "
            f"{TOTALS['awards']} awards, {TOTALS['delivered']} frames delivered"
        )
        print(
            f"  losers: {TOTALS['losers_told']} told when their task ended, {TOTALS['task_cancels_delivered']}"
            f" task-wide Cancels delivered; bids still holding a slot for an ended task after settling:"
            f" {TOTALS['held_after_end']} (Cancel lost, or bid made after the end; they lapse with the bid)"
        )
        cases = sorted((k.split(":", 1)[1], v) for k, v in TOTALS.items() if k.startswith("runs_with_case:"))
        print("  runs with each case: " + ", ".join(f"{k}={v}" for k, v in cases))
        for group in ("case", "fault", "outcome", "rejected"):
            items = sorted((k.split(":", 1)[1], v) for k, v in TOTALS.items() if k.startswith(group + ":"))
            print(f"  {group}s: " + ", ".join(f"{k}={v}" for k, v in items))
    assert TOTALS["full_runs"] >= RUNS, "fewer complete runs than configured"
    assert steps >= RUNS * STEPS
    injected = {k.split(":", 1)[1] for k in TOTALS if k.startswith("fault:")}
    expected = {
        "drop",
        "duplicate",
        "reorder",
        "delay",
        "partition",
        "heal",
        "agent_join",
        "agent_leave",
        "agent_crash",
        "agent_restart",
        "requester_crash",
        "requester_restart",
        "late_timers",
        "forged_bid",
        "silent_bidder",
        "backend_error",
        "user_cancel",
    }
    if RUNS < 1_000:  # a quick check (MARKET_RUNS, python -m tests.mutation): the safety checks above only
        return
    assert expected <= injected, expected - injected
    assert TOTALS["outcome:completed"] > 0 and TOTALS["awards"] > 0
    # the cases the invariants guard happen in a share of the runs (issue 19: a completed task's second Result
    # once came up in 3 runs of 1,000). At least 0.5%: the exact counts depend on what ran before in the process
    # (with the AwardAck held, spec 5.6, a duplicated accepted Result came up in 19 runs alone, 10 after the
    # conformance tests and 9 after the whole suite)
    for case in (
        "result_after_completion:duplicate",
        "result_after_completion:other",
        "reaward_after_lease",
        "new_round_after_lease",
        "second_price_capped",
    ):
        assert TOTALS[f"runs_with_case:{case}"] >= RUNS // 200, (case, TOTALS[f"runs_with_case:{case}"])
    assert TOTALS["losers_told"] > 0 and TOTALS["task_cancels_delivered"] > 0
