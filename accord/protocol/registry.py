"""The registry view (spec 6.6): who is in the mesh, built from Advertise heartbeats, with TTL.

Pure and clock-free like the machines: every call takes ``now`` (ns). One Registry per requester process is
shared by its requester machines; the shell feeds it every verified Advertise and Withdraw it receives.

- An entry lapses ``ttl_ms`` after it was received (local time, so agent clock skew does not matter), or at
  the Advertise's ``expires_ns`` if that is earlier.
- Out of order heartbeats: an Advertise replaces the entry only if it is newer in ``seq`` or in ``ts``; one
  that is older in both (a reordered or duplicated heartbeat) is ignored. An agent that restarts resets
  ``seq`` but advances ``ts``, so it is accepted.
- Withdraw removes the agent and leaves a tombstone: heartbeats older (``ts``) than the Withdraw are ignored,
  a later one (the agent came back) is accepted.
- Bounded (spec 11.9): one entry per agent id (a newer card replaces the older), at most ``max_agents`` entries
  and as many tombstones. A card of a new agent that finds the registry full of live entries is refused and
  counted (``refused``); a live entry is never evicted to make room (an unknown agent must not push a known one
  out). A full tombstone record forgets its oldest tombstone first.
- :meth:`Registry.shortlist` gives the ``k`` agents with the best predicted score for a task, among those whose
  price sheet makes them eligible, so that a call for proposals goes to ``k`` inboxes instead of the mesh.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterator
from typing import Final

import msgspec
from msgspec import Struct

from accord.protocol.market import (
    NS_PER_MS,
    CredentialLookup,
    Ineligibility,
    Offer,
    QualityPredictor,
    rank,
    score,
    sheet_quote,
)
from accord.protocol.messages import MAX_SKEW_NS, PROTOCOL_VERSION, Advertise, Mechanism, Task, Withdraw

__all__ = ["Candidates", "Registry", "RegistryEntry"]

_TOMBSTONE_NS: Final = 3_600_000 * NS_PER_MS
"""How long a Withdraw's tombstone is kept: the longest TTL an Advertise may carry."""


class RegistryEntry(Struct, frozen=True, gc=False):
    advert: Advertise
    digest: str
    """SHA-256 of the Advertise's payload bytes (direct awards bind it as ``bid_digest``)."""
    received_ns: int
    expires_ns: int


class Candidates(Struct, frozen=True):
    """The agents of the registry that could take a task now (best first), and why none could, if so."""

    eligible: list[str]
    why_none: str = ""


def _explain(why: Ineligibility, task: Task) -> str:
    """An ineligibility in words a person asking the mesh can act on."""
    c = task.constraints
    if why is Ineligibility.RESIDENCY:
        return f"not certified for residency {c.residency}"
    if why is Ineligibility.PRIVACY:
        return f"not certified for privacy {c.privacy.value}"
    if why is Ineligibility.TIER:
        return "certified for another tier than " + "/".join(t.value for t in c.preferred_tiers)
    if why is Ineligibility.CLAIM:
        return "advertising claims its certificate contradicts"
    return why.value


class Registry:
    """Live agent cards keyed by agent id. Not thread-safe (one event loop owns it)."""

    __slots__ = ("_entries", "_next_lapse", "_tombstones", "max_agents", "refused")

    def __init__(self, *, max_agents: int = 10_000) -> None:
        self.max_agents = max_agents
        """Entries (agents) at most, and tombstones at most (spec 11.9)."""
        self._entries: dict[str, RegistryEntry] = {}
        self._tombstones: OrderedDict[str, tuple[int, int]] = OrderedDict()  # agent -> (withdraw ts, expiry)
        self.refused = 0
        """Cards of new agents refused because the registry was full of live entries."""
        self._next_lapse = 0
        """No entry lapses before this (a lower bound): a full registry is swept only once one may have lapsed,
        so a flood of new cards costs O(1) each, not a sweep each."""

    # --- updates ----------------------------------------------------------------------------------------------
    def observe(self, advert: Advertise, *, now: int, digest: str = "") -> bool:
        """Record a heartbeat; True if it was accepted (new agent or newer card)."""
        agent = advert.sender
        expires = now + advert.ttl_ms * NS_PER_MS
        if advert.expires_ns is not None:  # the agent's clock (spec 9.3)
            expires = min(expires, advert.expires_ns + MAX_SKEW_NS)
        if expires <= now:
            return False
        tomb = self._tombstones.get(agent)
        if tomb is not None:
            if advert.ts <= tomb[0] and tomb[1] > now:
                return False
            del self._tombstones[agent]
        old = self._entries.get(agent)
        if old is not None and old.expires_ns > now:
            prev = old.advert
            if advert.seq <= prev.seq and advert.ts <= prev.ts:
                return False
        elif old is None and len(self._entries) >= self.max_agents:
            if now >= self._next_lapse:
                self.expire(now=now)
            if len(self._entries) >= self.max_agents:
                self.refused += 1
                return False
        self._entries[agent] = RegistryEntry(advert, digest, now, expires)
        self._next_lapse = min(self._next_lapse, expires)
        return True

    def refresh(self, agent_id: str, *, now: int) -> bool:
        """A heartbeat repeated the agent's card exactly: keep the entry live for another ``ttl_ms`` from ``now``,
        changing nothing else (an unverified frame may not move its seq, time or load). False if unknown."""
        entry = self._entries.get(agent_id)
        if entry is None:
            return False
        expires = now + entry.advert.ttl_ms * NS_PER_MS
        if entry.advert.expires_ns is not None:
            expires = min(expires, entry.advert.expires_ns + MAX_SKEW_NS)
        self._entries[agent_id] = msgspec.structs.replace(entry, expires_ns=max(entry.expires_ns, expires))
        return True

    def withdraw(self, message: Withdraw, *, now: int) -> bool:
        """Remove an agent that says it leaves; True if it was known. Leaves a tombstone at ``message.ts``."""
        agent = message.sender
        tomb = self._tombstones.get(agent)
        if tomb is None or message.ts > tomb[0]:
            if tomb is None and len(self._tombstones) >= self.max_agents:
                self._tombstones.popitem(last=False)  # the oldest: its agent may re-advertise sooner
            self._tombstones[agent] = (message.ts, now + _TOMBSTONE_NS)
        old = self._entries.get(agent)
        if old is not None and old.advert.ts <= message.ts:
            del self._entries[agent]
            return True
        return False

    def expire(self, *, now: int) -> list[str]:
        """Drop lapsed entries and old tombstones; the agent ids dropped."""
        gone = [a for a, e in self._entries.items() if e.expires_ns <= now]
        for a in gone:
            del self._entries[a]
        self._next_lapse = min((e.expires_ns for e in self._entries.values()), default=now)
        for a in [a for a, (_, until) in self._tombstones.items() if until <= now]:
            del self._tombstones[a]
        return gone

    # --- queries ----------------------------------------------------------------------------------------------
    def get(self, agent_id: str, *, now: int) -> RegistryEntry | None:
        e = self._entries.get(agent_id)
        return e if e is not None and e.expires_ns > now else None

    def live(self, *, now: int) -> Iterator[RegistryEntry]:
        """Entries that have not lapsed at ``now`` (in insertion order)."""
        return (e for e in self._entries.values() if e.expires_ns > now)

    def count(self, *, now: int) -> int:
        return sum(1 for _ in self.live(now=now))

    def largest_context(self, kind: str, *, now: int) -> int:
        """The largest context window any live agent taking ``kind`` advertises (0 if none does)."""
        windows = (
            m.context_window
            for e in self.live(now=now)
            if not e.advert.skills or kind in e.advert.skills
            for m in e.advert.models
        )
        return max(windows, default=0)

    def offers(
        self,
        task: Task,
        *,
        now: int,
        exclude: Collection[str] = (),
        prefilter: bool = False,
        only: str | None = None,
    ) -> list[Offer]:
        """One direct offer per live agent that could take ``task``: its best model by the task's score.

        An agent qualifies if it speaks this protocol version, lists the task's kind among its skills (or lists
        none), has a free slot (``load < slots``) and has a model whose context window fits the task. Its offer
        is quoted from the price sheet (:func:`~accord.protocol.market.sheet_quote`, with the connectivity RTT
        as overhead); eligibility is left to :func:`~accord.protocol.market.rank`. ``prefilter`` also skips, before
        quoting, agents whose advertised residency classes or tier the task rules out (they would be ineligible).
        ``only``: quote this one agent's sheet and no other (a direct award to the agent the asker named).
        """
        c = task.constraints
        need = task.est_input_tokens + task.max_output_tokens
        posted = task.mechanism is Mechanism.POSTED_PRICE
        residency = c.residency if prefilter else None
        tiers = c.preferred_tiers if prefilter else ()
        out: list[Offer] = []
        if only is None:
            entries: Collection[RegistryEntry] = self._entries.values()
        else:
            one = self._entries.get(only)
            entries = () if one is None else (one,)
        for entry in entries:
            adv = entry.advert
            if entry.expires_ns <= now or adv.sender in exclude:
                continue
            if adv.load >= adv.slots or PROTOCOL_VERSION not in adv.protocol_versions:
                continue
            if (adv.skills and task.kind not in adv.skills) or (tiers and adv.tier not in tiers):
                continue
            if residency is not None and residency not in adv.residency:
                continue
            best: tuple[float, int, int, str] | None = None
            best_model = None
            for m in adv.models:
                if m.context_window < need:
                    continue
                price, latency = sheet_quote(
                    m,
                    input_tokens=task.est_input_tokens,
                    output_tokens=task.max_output_tokens,
                    overhead_ms=adv.connectivity.rtt_ms,
                )
                if posted and price <= c.max_price_micros:
                    price = c.max_price_micros
                key = (-score(m.quality, price, latency, task.policy), price, latency, m.name)
                if best is None or key < best:
                    best, best_model = key, m
            if best is None or best_model is None:
                continue
            out.append(
                Offer(
                    agent_id=adv.sender,
                    bid_id=adv.id,
                    digest=entry.digest,
                    model=best_model.name,
                    price_micros=best[1],
                    latency_ms=best[2],
                    quality=best_model.quality,
                    valid_until_ns=entry.expires_ns,
                    tier=adv.tier,
                    region=adv.region,
                    residency=tuple(adv.residency),
                    direct=True,
                )
            )
        return out

    def shortlist(
        self,
        task: Task,
        *,
        now: int,
        k: int,
        credentials: CredentialLookup,
        predictor: QualityPredictor,
        exclude: Collection[str] = (),
    ) -> list[str]:
        """The ``k`` agents whose advertised offers for ``task`` rank best among the eligible ones at ``now``."""
        if k <= 0:
            return []
        offers = self.offers(task, now=now, exclude=exclude, prefilter=True)
        ranking = rank(offers, task, now=now, credentials=credentials, predictor=predictor, limit=k)
        return [s.offer.agent_id for s in ranking.eligible]

    def candidates(
        self,
        task: Task,
        *,
        now: int,
        credentials: CredentialLookup,
        predictor: QualityPredictor,
        explain_untrusted: Callable[[str], str | None] | None = None,
    ) -> Candidates:
        """Who could take ``task`` by the advertised price sheets (the rules of spec 6.1), best first; when nobody
        could, a one-line diagnosis of what the registry saw. ``explain_untrusted(agent_id)`` may say why the
        trust rule refused an agent (e.g. "not certified for residency eu") instead of plain ``untrusted``."""
        offers = self.offers(task, now=now)
        ranking = rank(offers, task, now=now, credentials=credentials, predictor=predictor)
        eligible = [s.offer.agent_id for s in ranking.eligible]
        if eligible:
            return Candidates(eligible)
        live = self.count(now=now)
        if live == 0:
            return Candidates([], "no agent advertised on the mesh")
        agents = f"{live} agent{'s' if live != 1 else ''} advertised"
        if not offers:
            return Candidates([], f"{agents}, none with a free slot that takes kind {task.kind!r} and its prompt")
        reasons: Counter[str] = Counter()
        for offer, why in ranking.ineligible:
            explained = explain_untrusted(offer.agent_id) if explain_untrusted is not None else None
            reasons[explained if why is Ineligibility.UNTRUSTED and explained else _explain(why, task)] += 1
        ruled = ", ".join(f"{why} x{n}" for why, n in reasons.most_common())
        return Candidates([], f"{agents}, all ruled out by the task's constraints: {ruled}")

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tombstones(self) -> int:
        """Withdrawn agents remembered now (at most ``max_agents``)."""
        return len(self._tombstones)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._entries
