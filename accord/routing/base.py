"""What every router is: a per-query scorer of how much the strong model is worth, trained on outcome logs.

A router is asked at request time, once per query (:class:`Query`), for a ``score``: the predicted benefit of
sending the query to the strong model instead of the weak one (in quality units on a 0..1 scale; higher means
"more worth escalating"). The caller turns scores into decisions with a threshold (:meth:`Router.route`) or,
with several models, compares :meth:`Router.predict` (predicted quality per model) against prices.
Routers are fitted on :class:`~accord.routing.records.Outcome` records and saved as data (msgpack or JSON via
msgspec, never pickle): see :mod:`accord.routing.files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from accord.errors import AccordError
from accord.routing.records import Outcome

__all__ = ["FloatArray", "LearningPredictor", "Query", "Router", "RouterError"]

FloatArray = npt.NDArray[np.float64]


class RouterError(AccordError):
    """A router was misused or given data it cannot learn from; ``reason`` is a short stable token
    (``"not_fitted"``, ``"no_pair"``, ``"answer_required"``, ``"bad_file"``, ``"unknown_kind"``, ...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """What a router sees of a task at request time."""

    text: str
    kind: str = "chat"
    category: str | None = None
    answer: str | None = None
    """The first tier's (weak model's) answer, when the router is a cascade verifier; else None."""

    @classmethod
    def from_outcome(cls, record: Outcome, *, answer: str | None = None) -> Query:
        return cls(text=record.prompt, kind=record.kind, category=record.category, answer=answer)


@runtime_checkable
class Router(Protocol):
    """The router port. Implementations: subject, logistic, mf, bandit, cascade (see ``ROUTER_KINDS``)."""

    kind: ClassVar[str]
    weak: str
    strong: str

    def fit(self, records: Sequence[Outcome]) -> None:
        """Learn from outcome records (every query should have a record for both ``weak`` and ``strong``)."""
        ...

    def score(self, query: Query) -> float:
        """Predicted benefit of the strong model over the weak one for this query (higher: escalate)."""
        ...

    def score_batch(self, queries: Sequence[Query]) -> FloatArray:
        """``score`` for many queries at once (same numbers, faster)."""
        ...

    def predict(self, query: Query) -> dict[str, float]:
        """Predicted quality (0..1) per model this router knows."""
        ...

    def route(self, query: Query, threshold: float) -> str:
        """``strong`` when ``score(query) >= threshold``, else ``weak``."""
        ...


@runtime_checkable
class LearningPredictor(Protocol):
    """A quality predictor that learns online: a requester feeds it every attempt it scores (a failure as 0,
    a result when a vote, judge or ground truth scores it), as the outcome store records them."""

    def observe(self, outcome: Outcome) -> None: ...
