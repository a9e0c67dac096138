"""A registry whose shortlists are remembered per class of task for a short time (spec 6.6).

``Registry.shortlist`` quotes and ranks every live card for every call for proposals: O(agents) per task, some
15-40 ms per announce with a thousand cards here, which would make a large mesh slower than a small one. But a
shortlist is only an invitation list: who bids is decided by the agents, who wins by the requester's machine at
the end of the round, on the bids and the certificates, never on the shortlist. So a requester may reuse the
ranking it computed for an equivalent task a moment ago. Tasks are equivalent here when everything that can
change an agent's eligibility or score is equal (kind, residency, privacy, tiers, budget, quality floor, policy,
mechanism, token counts) and their deadline slack falls in the same power-of-two bucket; a ranking is reused for
``ttl_ms`` (default 250 ms) and recomputed after that, so joins, leaves, load and reputation show up within it.
A predictor whose values depend on the query itself (a :class:`PerQueryPredictor`, such as the learned
predictor) adds its ``query_key(task)`` to the class, so tasks with different prompts never share a ranking. The
trust policy and the predictor object are not part of the key: share one CachingRegistry only among requesters
that use the same ones (each Requester makes its own by default).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Protocol, runtime_checkable

from accord.protocol.market import NS_PER_MS, CredentialLookup, QualityPredictor
from accord.protocol.messages import Task
from accord.protocol.registry import Registry

__all__ = ["CachingRegistry", "PerQueryPredictor"]

_MAX_CLASSES = 1024


@runtime_checkable
class PerQueryPredictor(QualityPredictor, Protocol):
    """A quality predictor whose values depend on the task's prompt, not only on its class."""

    def query_key(self, task: Task) -> Hashable:
        """Equal for tasks the predictor cannot tell apart (e.g. the same normalised prompt and kind)."""
        ...


class CachingRegistry(Registry):
    """A :class:`~accord.protocol.registry.Registry` with shortlists memoised per task class for ``ttl_ms``."""

    __slots__ = ("_memo", "_per_query", "hits", "misses", "ttl_ns")

    def __init__(self, *, max_agents: int = 10_000, ttl_ms: int = 250) -> None:
        super().__init__(max_agents=max_agents)
        self.ttl_ns = ttl_ms * NS_PER_MS
        self._memo: dict[Hashable, tuple[int, int, list[str]]] = {}
        self._per_query: tuple[QualityPredictor, PerQueryPredictor | None] | None = None
        """The last predictor seen and, if it is one, it as a PerQueryPredictor: a runtime protocol check costs
        some 10 us, paid once per predictor instead of once per task."""
        self.hits = 0
        self.misses = 0

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
        if k <= 0:
            return []
        key = _task_class(task, now)
        per_query = self._per_query
        if per_query is None or per_query[0] is not predictor:
            per_query = (predictor, predictor if isinstance(predictor, PerQueryPredictor) else None)
            self._per_query = per_query
        if per_query[1] is not None:
            key = (key, per_query[1].query_key(task))
        want = k + len(exclude)
        hit = self._memo.get(key)
        if hit is not None and now - hit[0] <= self.ttl_ns and hit[1] >= want:
            self.hits += 1
            ranked = hit[2]
        else:
            self.misses += 1
            depth = max(want, 2 * k)
            ranked = super().shortlist(task, now=now, k=depth, credentials=credentials, predictor=predictor)
            if len(self._memo) >= _MAX_CLASSES:
                self._memo.clear()
            # fewer than asked for means every eligible agent is in the list: it serves any depth
            self._memo[key] = (now, depth if len(ranked) >= depth else 1 << 30, ranked)
        if not exclude:
            return ranked[:k]
        return [a for a in ranked if a not in exclude][:k]


def _task_class(task: Task, now: int) -> Hashable:
    c = task.constraints
    slack_ms = max(1, (c.deadline_ns - now) // NS_PER_MS)
    return (
        task.kind,
        c.residency,
        c.privacy,
        tuple(c.preferred_tiers),
        c.max_price_micros,
        c.min_quality,
        task.policy,
        task.mechanism,
        task.est_input_tokens,
        task.max_output_tokens,
        slack_ms.bit_length(),
    )
