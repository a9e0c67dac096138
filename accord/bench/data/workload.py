"""Benchmark workloads: the queries to send through a mesh, what each model recorded for them, and the log the
replay agents answer from.

A :class:`Workload` is one evaluation set of a (weak, strong) model pair:

- ``queries``: one :class:`BenchQuery` per row of the set, in the set's order, with its turns (one for MMLU and
  GSM8K, two for MT-Bench), its request-time features (kind, category) and, per model, the recorded outcome of the
  whole query (the quality signal a router is scored on) and per turn what that model answered and how long the
  answer was (:class:`Recorded`);
- ``log``: the :class:`~accord.backends.replay.OutcomeLog` the replay agents answer from (the same
  :class:`~accord.routing.records.Outcome` records; for a multi-turn set, one per turn);
- ``prices``: each model's price sheet (micro-USD per 1,000 input / output tokens), which its agents advertise.

Builders: :func:`routellm_workload` (the RouteLLM sets, read once by
:func:`~accord.bench.data.routellm.read_routellm`, contaminated prompts dropped: its per-query records give the
rows and their ids, its per-turn records the replay log), :func:`synthetic_workload` (a generated log, no data
set needed) and :func:`workload_from_outcomes` (any single-turn outcome log).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from accord.backends.replay import OutcomeLog
from accord.bench.data.routellm import PRICES, SETS, read_routellm
from accord.bench.data.synthetic import STRONG as SYNTHETIC_STRONG
from accord.bench.data.synthetic import WEAK as SYNTHETIC_WEAK
from accord.bench.data.synthetic import synthetic_outcomes
from accord.protocol.pricing import estimate_tokens
from accord.routing.base import Query, RouterError
from accord.routing.records import Outcome
from accord.routing.table import infer_pair

__all__ = [
    "SYNTHETIC_PRICES",
    "BenchQuery",
    "Recorded",
    "Workload",
    "per_1k",
    "routellm_workload",
    "synthetic_workload",
    "workload_from_outcomes",
]

SYNTHETIC_PRICES: Final[dict[str, tuple[int, int]]] = {
    SYNTHETIC_WEAK: (600, 600),
    SYNTHETIC_STRONG: (10_000, 30_000),
}
"""Price sheets of the synthetic pair (micro-USD per 1,000 tokens), shaped like the RouteLLM pair's."""


def per_1k(prices: dict[str, tuple[float, float]]) -> dict[str, tuple[int, int]]:
    """USD per million tokens (= micro-USD per token) as integer micro-USD per 1,000 tokens."""
    return {model: (round(p_in * 1000), round(p_out * 1000)) for model, (p_in, p_out) in prices.items()}


@dataclass(frozen=True)
class Recorded:
    """What one model answered to one turn: the text (None when the set records none) and its length in tokens
    (the set's count, else ``ceil(chars / 4)``; 1 for a one-letter answer)."""

    response: str | None
    output_tokens: int


@dataclass(frozen=True)
class BenchQuery:
    """One row of a workload."""

    query_id: str
    kind: str
    category: str | None
    turns: tuple[str, ...]
    truth: dict[str, Outcome]
    """Model -> its recorded outcome of the whole query (the quality signal the query is scored on)."""
    recorded: dict[str, tuple[Recorded, ...]]
    """Model -> what it answered, per turn."""

    @property
    def prompt(self) -> str:
        """The first turn: what a router sees at request time."""
        return self.turns[0]

    def query(self, answer: str | None = None) -> Query:
        """The router's view of this query (``answer``: the first tier's answer, for cascades)."""
        return Query(text=self.prompt, kind=self.kind, category=self.category, answer=answer)


@dataclass(frozen=True)
class Workload:
    name: str
    queries: list[BenchQuery]
    log: OutcomeLog
    weak: str
    strong: str
    prices: dict[str, tuple[int, int]]
    """Model -> (input, output) price in micro-USD per 1,000 tokens."""

    def __len__(self) -> int:
        return len(self.queries)

    def records(self) -> list[Outcome]:
        """The set's own outcome records of both models (weak then strong per query), for offline comparison."""
        return [q.truth[m] for q in self.queries for m in (self.weak, self.strong)]

    def limit(self, n: int | None) -> Workload:
        """At most ``n`` queries, evenly spaced over the set (so every part of it is represented)."""
        total = len(self.queries)
        if n is None or n >= total:
            return self
        if n < 1:
            raise RouterError("bad_input", "a workload limit must be >= 1")
        picked = [self.queries[i * total // n] for i in range(n)]
        return replace(self, queries=picked)


def _recorded(record: Outcome) -> Recorded:
    tokens = record.output_tokens
    if tokens is None:
        tokens = estimate_tokens(record.response) if record.response else 1
    return Recorded(response=record.response, output_tokens=max(1, tokens))


def _group(records: Sequence[Outcome], models: tuple[str, str]) -> list[tuple[Outcome, dict[str, Outcome]]]:
    """(first record, model -> record) per query id that both models answered, in first-appearance order."""
    by_query: dict[str, dict[str, Outcome]] = defaultdict(dict)
    order: list[str] = []
    for record in records:
        if record.model not in models:
            continue
        if record.query_id not in by_query:
            order.append(record.query_id)
        by_query[record.query_id].setdefault(record.model, record)
    return [(by_query[q][models[0]], by_query[q]) for q in order if len(by_query[q]) == 2]


def workload_from_outcomes(
    name: str,
    records: Sequence[Outcome],
    *,
    prices: dict[str, tuple[int, int]],
    weak: str | None = None,
    strong: str | None = None,
    log: OutcomeLog | None = None,
) -> Workload:
    """A single-turn workload from outcome records (two models per query id). The replay log is built from the
    same records unless ``log`` is given."""
    if weak is None or strong is None:
        weak, strong = infer_pair(records)
    queries = [
        BenchQuery(
            query_id=first.query_id,
            kind=first.kind,
            category=first.category,
            turns=(first.prompt,),
            truth=dict(pair),
            recorded={model: (_recorded(pair[model]),) for model in (weak, strong)},
        )
        for first, pair in _group(records, (weak, strong))
    ]
    if not queries:
        raise RouterError("no_pair", f"no query has outcomes of both {weak!r} and {strong!r}")
    missing = {weak, strong} - set(prices)
    if missing:
        raise RouterError("bad_input", f"no price sheet for {sorted(missing)}")
    replay = log if log is not None else OutcomeLog(records)
    return Workload(name=name, queries=queries, log=replay, weak=weak, strong=strong, prices=prices)


def synthetic_workload(n: int, *, seed: int = 0) -> Workload:
    """:func:`~accord.bench.data.synthetic.synthetic_outcomes` as a workload, priced by
    :data:`SYNTHETIC_PRICES`."""
    records = synthetic_outcomes(n, seed=seed)
    return workload_from_outcomes(
        "synthetic", records, prices=SYNTHETIC_PRICES, weak=SYNTHETIC_WEAK, strong=SYNTHETIC_STRONG
    )


def _turns(log: OutcomeLog) -> dict[tuple[str, str], dict[int, Outcome]]:
    """(query id, model) -> turn -> the record of that turn, for the per-turn records of a multi-turn log."""
    turns: dict[tuple[str, str], dict[int, Outcome]] = defaultdict(dict)
    for record in log:
        if record.turn is not None:
            turns[(record.query_id, record.model)][record.turn] = record
    return turns


def routellm_workload(name: str, datasets_dir: str | Path | None = None) -> Workload:
    """One RouteLLM set (``mmlu``, ``gsm8k`` or ``mt_bench``) as a workload, from one
    :func:`~accord.bench.data.routellm.read_routellm`: rows and ids from its per-query records, the replay log
    from its per-turn records, prices from :data:`~accord.bench.data.routellm.PRICES`. MT-Bench queries have both
    turns; turn 2's recorded answer is the one its judge quoted."""
    if name not in SETS:
        raise RouterError("bad_input", f"unknown RouteLLM set {name!r}; choose from {', '.join(SETS)}")
    rows = read_routellm(name, datasets_dir)
    log = rows.replay_log()
    single = workload_from_outcomes(name, rows.outcomes(), prices=per_1k(dict(PRICES)), log=log)
    per_turn = _turns(log)
    if not per_turn:  # single-turn set
        return single
    queries = []
    for query in single.queries:
        recorded: dict[str, tuple[Recorded, ...]] = {}
        prompts: tuple[str, ...] = ()
        for model in (single.weak, single.strong):
            turns = per_turn.get((query.query_id, model), {})
            if not turns or sorted(turns) != list(range(1, len(turns) + 1)):
                raise RouterError("bad_input", f"{query.query_id}: {model} has turns {sorted(turns)}")
            ordered = [turns[t] for t in sorted(turns)]
            prompts = tuple(r.prompt for r in ordered)
            recorded[model] = tuple(
                Recorded(r.response, max(1, estimate_tokens(r.response)) if r.response else 1) for r in ordered
            )
        queries.append(replace(query, turns=prompts, recorded=recorded))
    return replace(single, queries=queries)
