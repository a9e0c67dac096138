"""The learned quality predictor: calibrated P(good answer | query, model) for any number of models, inside the
market.

:class:`LearnedPredictor` is fitted on outcome records (:meth:`LearnedPredictor.fit`, or
:meth:`LearnedPredictor.from_outcomes`) and has three parts:

1. **Per-query quality**: a multi-task logistic regression over the query's hashed text, kind and category
   (:mod:`~accord.routing.multitask`: a part shared by all models, which learns what makes a query hard, plus a
   part per model), its logits calibrated per model by Platt scaling fitted on out-of-fold logits
   (:mod:`~accord.routing.calibration`; ``folds`` folds of the training log, split by prompt).
2. **Per-task tables** (:mod:`~accord.routing.groups`): each model's shrunk mean quality and cost per task
   key; the quality table is the fallback policy (the best single model of the task), the cost table the price
   estimate used offline (in the market the bid's price is used).
3. **The gate** (:mod:`~accord.routing.gate`): per task key and price weight lambda, which of the learned values,
   the per-task table and the overall table did best on the training log's out-of-fold values; where a table
   did, the predictor answers with it, so that the router is the best single model of the task (or overall) at
   that lambda, a point of the single models' hull.

In the market it is a :class:`~accord.protocol.market.QualityPredictor`: ``predict(offer, task)`` reads the task's
first user message and kind (no category: a task carries none) and the task's ``lambda_price``, and returns the
gated value of the offer's model, which the requester ranks by ``value - lambda * price - mu * latency``. A model
it was not trained on starts from the offer's claimed quality, moved by how hard the query looks to every model
(the shared part, centred). Online, :meth:`LearnedPredictor.observe` takes a verified
:class:`~accord.routing.records.Outcome` and moves that model's offset (a logit shift, one Newton step of a
Gaussian-prior logistic model per outcome); :meth:`LearnedPredictor.refit` fits again from every outcome so far.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np

from accord.protocol.market import Offer
from accord.protocol.messages import Role, Task
from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.calibration import platt, reliability
from accord.routing.clusters import Clusters, ClusterState, fit_clusters
from accord.routing.common import pack, unpack
from accord.routing.features import TextFeaturizer
from accord.routing.gate import OPTIONS, Gate, Option, breakpoints, choose, fit_gate, lambda_grid
from accord.routing.groups import GroupTable
from accord.routing.matrix import OutcomeMatrix, group_folds
from accord.routing.multitask import MultiTaskFit, fit_multitask
from accord.routing.records import Outcome
from accord.routing.sparse import SparseRows, sigmoid

__all__ = ["FitReport", "LearnedPredictor", "OnlineOffset", "Plan", "PredictorState", "query_of_task"]

_CACHE: Final = 512


def _logit(p: FloatArray | float) -> FloatArray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.asarray(np.log(clipped / (1 - clipped)), dtype=np.float64)


def _shift(p: FloatArray, offset: FloatArray) -> FloatArray:
    """``p`` moved by ``offset`` in logit space; exactly ``p`` where the offset is 0 (the market's and the
    plan's numbers must agree to the last bit)."""
    return np.where(offset == 0.0, p, sigmoid(_logit(p) + offset))


def _log_loss(p: FloatArray, y: FloatArray) -> float:
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))


def query_of_task(task: Task) -> Query:
    """What the predictor sees of a market task: its first user message (as outcome records store the prompt)
    and its kind; a task carries no category."""
    text = next((m.content for m in task.messages if m.role is Role.USER), "")
    return Query(text=text, kind=task.kind)


class OnlineOffset(msgspec.Struct, frozen=True, kw_only=True):
    """A model's online logit shift and the precision behind it (prior precision plus observed information)."""

    offset: float = 0.0
    precision: float
    observed: int = 0
    claim: float | None = None
    """The last claimed quality seen for a model the predictor was not trained on (its prior)."""


class FitReport(msgspec.Struct, frozen=True, kw_only=True):
    """How the fit did on its own training log, out of fold (None where it was not cross-fitted)."""

    rows: int
    complete_rows: int
    """Queries with an outcome of every model (what the gate is fitted on)."""
    folds: int
    log_loss: float | None = None
    """Of the calibrated out-of-fold predictions, over every observed (query, model)."""
    log_loss_fallback: float | None = None
    """Of the per-task table alone (what the text adds is the difference)."""
    ece: float | None = None
    """Expected calibration error of the calibrated out-of-fold predictions (10 bins)."""
    gate: dict[str, float] = {}
    """Share of the gate's (task key, lambda) cells that use each option (learned, task, global)."""


class PredictorState(msgspec.Struct, frozen=True, kw_only=True, tag="predictor"):
    features: TextFeaturizer
    models: list[str]
    l2_shared: float
    l2_model: float
    folds: int
    dim: int
    columns: bytes
    """The feature columns seen in training, little-endian int32."""
    weights: bytes
    """``(len(columns), models + 1)`` float32: the shared part, then one column per model."""
    bias: list[float]
    platt_a: list[float]
    platt_b: list[float]
    shared_mean: float
    group_keys: list[str]
    group_quality: bytes
    group_cost: bytes
    overall_quality: list[float]
    overall_cost: list[float]
    gate_lambdas: list[float]
    gate_keys: list[str]
    gate_choice: list[list[int]]
    online: dict[str, OnlineOffset] = {}
    online_prior: float = 20.0
    clusters: ClusterState | None = None
    report: FitReport | None = None


@dataclass(frozen=True)
class Plan:
    """The predictor's view of a batch of queries, ready to choose at any lambda: one
    :class:`~accord.routing.gate.Option` per entry of :data:`~accord.routing.gate.OPTIONS` and the gate."""

    models: list[str]
    options: tuple[Option, ...]
    gate: Gate
    gate_rows: np.ndarray

    @property
    def learned(self) -> FloatArray:
        """Calibrated per-query predictions ``(queries, models)``."""
        return self.options[0].values

    def _pick(self, lam: float, part: str) -> FloatArray:
        picked = self.gate.options(self.gate_rows, lam)
        out = np.array(getattr(self.options[0], part), dtype=np.float64)
        for index, option in enumerate(self.options[1:], start=1):
            rows = picked == index
            out[rows] = getattr(option, part)[rows]
        return out

    def values(self, lam: float) -> FloatArray:
        """The value of each (query, model) the choice at ``lam`` is made with (its gated option's)."""
        return self._pick(lam, "values")

    def costs(self, lam: float) -> FloatArray:
        """The cost estimates (micro-USD) the choice at ``lam`` is made with."""
        return self._pick(lam, "cost")

    def choose(self, lam: float) -> np.ndarray:
        """The model index chosen for every query at price weight ``lam`` (per USD)."""
        return choose(self.values(lam), self.costs(lam), lam)

    def restrict(self, models: Sequence[str]) -> Plan:
        """The same plan choosing among ``models`` only (e.g. those a log to evaluate on has)."""
        columns = [self.models.index(m) for m in models]
        return Plan(
            models=list(models),
            options=tuple(Option(values=o.values[:, columns], cost=o.cost[:, columns]) for o in self.options),
            gate=self.gate,
            gate_rows=self.gate_rows,
        )

    def lambdas(self, points: int = 200) -> list[float]:
        """Price weights that trace the whole curve: 0, quantiles of the breakpoints of the options' values and
        the gate's grid, and one beyond which every query goes to its cheapest model."""
        grid = lambda_grid([breakpoints(o.values, o.cost) for o in self.options], points)
        merged = np.unique(np.concatenate([grid, self.gate.lambdas]))
        return [float(v) for v in merged]


class LearnedPredictor:
    """See the module docstring. Settings: ``l2_shared`` / ``l2_model`` (the multi-task penalties), ``folds``
    (out-of-fold fits for calibration and the gate; below 2: no calibration, the learned values always used),
    ``quality_prior`` / ``cost_prior`` (pseudo-queries of the per-task tables), ``gate_min`` (queries a task key
    needs to get a gate row of its own), ``online_prior`` (prior precision of an online offset)."""

    kind = "predictor"

    def __init__(
        self,
        *,
        features: TextFeaturizer | None = None,
        l2_shared: float = 1.0,
        l2_model: float = 1.0,
        folds: int = 3,
        max_iter: int = 120,
        quality_prior: float = 10.0,
        cost_prior: float = 5.0,
        gate_min: int = 200,
        online_prior: float = 20.0,
        cluster_ks: Sequence[int] = (8, 24),
        seed: int = 0,
    ) -> None:
        self.features = features if features is not None else TextFeaturizer()
        self.l2_shared = l2_shared
        self.l2_model = l2_model
        self.folds = folds
        self.max_iter = max_iter
        self.quality_prior = quality_prior
        self.cost_prior = cost_prior
        self.gate_min = gate_min
        self.online_prior = online_prior
        self.seed = seed
        self.cluster_ks = tuple(cluster_ks)
        self.clusters: Clusters | None = None
        self.report: FitReport | None = None
        self.models: list[str] = []
        self.trained_rows = 0
        self._fit: MultiTaskFit | None = None
        self._platt = (np.zeros(0), np.zeros(0))
        self._shared_mean = 0.0
        self._quality = GroupTable([], np.zeros((0, 0)), np.zeros(0))
        self._cost = GroupTable([], np.zeros((0, 0)), np.zeros(0))
        self.gate = Gate.always()
        self.online: dict[str, OnlineOffset] = {}
        self._views: OrderedDict[str, tuple[FloatArray, FloatArray, int, float]] = OrderedDict()

    # --- fitting ------------------------------------------------------------------------------------------------
    @classmethod
    def from_outcomes(
        cls, records: Iterable[Outcome], models: Sequence[str] | None = None, **settings: Any
    ) -> LearnedPredictor:
        """A predictor fitted on ``records`` (``models``: which; default every model in them; ``settings``: as
        the constructor's)."""
        predictor = cls(**settings)
        predictor.fit(records, models)
        return predictor

    def fit(self, records: Iterable[Outcome], models: Sequence[str] | None = None) -> None:
        self.fit_matrix(OutcomeMatrix.from_outcomes(records, models))

    def refit(self, records: Iterable[Outcome]) -> None:
        """Fit again, with the same settings and models, on ``records`` (e.g. every outcome stored so far).
        Online offsets are cleared (the records they came from are in the new fit); those of models outside
        the fit are kept."""
        matrix = OutcomeMatrix.from_outcomes(records, self.models or None)
        kept = {m: o for m, o in self.online.items() if m not in matrix.models}
        self.fit_matrix(matrix)
        self.online = kept

    def fit_matrix(self, matrix: OutcomeMatrix) -> None:
        n, m = matrix.quality.shape
        if n < 2:
            raise RouterError("bad_input", "need outcomes of at least two queries")
        queries = matrix.queries
        self.clusters = fit_clusters(queries, self.features, ks=self.cluster_ks, seed=self.seed)
        x = self._encode(queries)
        y = matrix.quality
        folds = self._fold_ids(matrix)
        a, b = np.zeros(m), np.ones(m)
        gate = Gate.always()
        report = FitReport(rows=n, complete_rows=int((~np.isnan(y)).all(axis=1).sum()), folds=0)
        if folds is not None:
            logits = np.full((n, m), np.nan)
            fallback = np.full((n, m), np.nan)
            overall = np.full((n, m), np.nan)
            for fold in range(int(folds.max()) + 1):
                train, test = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
                fit = self._fit_once(x.take(train), y[train])
                logits[test] = fit.logits(x.take(test))
                table = GroupTable.fit([queries[i] for i in train], y[train], prior=self.quality_prior)
                fallback[test] = table.lookup([queries[i] for i in test])
                overall[test] = table.overall
            observed = ~np.isnan(y)
            for j in range(m):
                a[j], b[j] = platt(logits[observed[:, j], j], y[observed[:, j], j])
            learned = sigmoid(a + b * logits)
            report = FitReport(
                rows=n,
                complete_rows=int(observed.all(axis=1).sum()),
                folds=self.folds,
                log_loss=_log_loss(learned[observed], y[observed]),
                log_loss_fallback=_log_loss(fallback[observed], y[observed]),
                ece=reliability(learned[observed], y[observed])[0],
            )
            cost_table = GroupTable.fit(queries, matrix.cost, prior=self.cost_prior)
            task_cost = cost_table.lookup(queries)
            options = (
                Option(values=learned, cost=task_cost),
                Option(values=fallback, cost=task_cost),
                Option(values=overall, cost=np.tile(cost_table.overall, (n, 1))),
            )
            gate = fit_gate(queries, y, matrix.cost, options, min_rows=self.gate_min)
        self._fit = self._fit_once(x, y)
        self._platt = (a, b)
        self._shared_mean = float(self._fit.parts(x)[0].mean())
        self._quality = GroupTable.fit(queries, y, prior=self.quality_prior)
        self._cost = GroupTable.fit(queries, matrix.cost, prior=self.cost_prior)
        self.gate = gate
        self.report = msgspec.structs.replace(report, gate=gate.shares())
        self.models = list(matrix.models)
        self.trained_rows = n
        self.online = {}
        self._views.clear()

    def _encode(self, queries: Sequence[Query]) -> SparseRows:
        x = self.features.transform(queries)
        return x if self.clusters is None else x.hstack(self.clusters.transform(queries))

    def _fit_once(self, x: SparseRows, y: FloatArray) -> MultiTaskFit:
        return fit_multitask(
            x,
            y,
            l2_shared=self.l2_shared,
            l2_model=self.l2_model,
            max_iter=self.max_iter,
        )

    def _fold_ids(self, matrix: OutcomeMatrix) -> np.ndarray | None:
        """Fold per row (rows with one prompt share a fold), or None when there are too few prompts to fold."""
        groups = matrix.groups()
        if self.folds < 2 or len(set(groups)) < 5 * self.folds:
            return None
        return group_folds(groups, self.folds, self.seed)

    # --- predicting ---------------------------------------------------------------------------------------------
    def _check(self) -> MultiTaskFit:
        if self._fit is None:
            raise RouterError("not_fitted", "the predictor has not been fitted or loaded")
        return self._fit

    def _offsets(self) -> FloatArray:
        return np.asarray([self.online[m].offset if m in self.online else 0.0 for m in self.models])

    def _predict(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        """(calibrated predictions ``(n, models)`` with online offsets, shared part minus its training mean)."""
        fit = self._check()
        shared, logits = fit.parts(self._encode(queries))
        a, b = self._platt
        return sigmoid(a + b * logits + self._offsets()), shared - self._shared_mean

    def predict_quality(self, queries: Sequence[Query]) -> FloatArray:
        """Calibrated P(good answer) of every (query, model), ``(len(queries), len(models))``."""
        return self._predict(queries)[0]

    def plan(self, queries: Sequence[Query]) -> Plan:
        """The view of ``queries`` that :meth:`Plan.choose` picks models from at any lambda."""
        learned, _ = self._predict(queries)
        offsets = self._offsets()
        n = len(queries)
        task_cost = self._cost.lookup(queries)
        return Plan(
            models=list(self.models),
            options=(
                Option(values=learned, cost=task_cost),
                Option(values=_shift(self._quality.lookup(queries), offsets), cost=task_cost),
                Option(
                    values=np.tile(_shift(self._quality.overall, offsets), (n, 1)),
                    cost=np.tile(self._cost.overall, (n, 1)),
                ),
            ),
            gate=self.gate,
            gate_rows=self.gate.rows(queries),
        )

    def cost_estimate(self, queries: Sequence[Query]) -> FloatArray:
        """Estimated cost in micro-USD of every (query, model) (the per-task cost table)."""
        self._check()
        return self._cost.lookup(queries)

    # --- in the market ------------------------------------------------------------------------------------------
    def _view(self, task: Task) -> tuple[FloatArray, FloatArray, int, float]:
        key = task.task_id
        view = self._views.get(key)
        if view is None:
            query = query_of_task(task)
            fit = self._check()
            shared, logits = fit.parts(self._encode([query]))
            view = (logits[0], self._quality.row(query), int(self.gate.rows([query])[0]), float(shared[0]))
            self._views[key] = view
            if len(self._views) > _CACHE:
                self._views.popitem(last=False)
        return view

    def query_key(self, task: Task) -> Hashable:
        """What of ``task`` the predictor reads (a :class:`~accord.protocol.shortlists.PerQueryPredictor`): a
        requester's shortlist cache keys its rankings by it."""
        query = query_of_task(task)
        return (query.text, query.kind)

    def predict(self, offer: Offer, task: Task) -> float:
        """The offer's predicted quality for ``task`` at its ``lambda_price`` (see the module docstring)."""
        logits, fallback, gate_row, shared = self._view(task)
        online = self.online.get(offer.model)
        offset = online.offset if online is not None else 0.0
        try:
            j = self.models.index(offer.model)
        except ValueError:
            if online is None or online.claim != offer.quality:
                self.online[offer.model] = OnlineOffset(
                    offset=offset,
                    precision=online.precision if online is not None else self.online_prior,
                    observed=online.observed if online is not None else 0,
                    claim=offer.quality,
                )
            return float(sigmoid(_logit(offer.quality) + (shared - self._shared_mean) + offset))
        option = OPTIONS[int(self.gate.options(np.array([gate_row]), task.policy.lambda_price)[0])]
        if option == "learned":
            a, b = self._platt
            return float(sigmoid(a[j] + b[j] * logits[j] + offset))
        table = fallback if option == "task" else self._quality.overall
        return float(_shift(table[j : j + 1], np.array([offset]))[0])

    # --- online -------------------------------------------------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        """Learn from one verified outcome: move its model's logit offset by one Newton step."""
        if not outcome.has_quality:
            return
        query = Query.from_outcome(outcome)
        current = self.online.get(outcome.model)
        offset = current.offset if current is not None else 0.0
        if outcome.model in self.models:
            p = float(self.predict_quality([query])[0, self.models.index(outcome.model)])
        else:
            fit = self._check()
            shared = float(fit.parts(self._encode([query]))[0][0]) - self._shared_mean
            claim = current.claim if current is not None and current.claim is not None else 0.5
            p = float(sigmoid(_logit(claim) + shared + offset))
        precision = (current.precision if current is not None else self.online_prior) + p * (1 - p)
        self.online[outcome.model] = OnlineOffset(
            offset=offset + (outcome.unit_quality - p) / precision,
            precision=precision,
            observed=(current.observed if current is not None else 0) + 1,
            claim=current.claim if current is not None else None,
        )

    update = observe

    # --- files --------------------------------------------------------------------------------------------------
    def state(self) -> PredictorState:
        fit = self._check()
        a, b = self._platt
        return PredictorState(
            features=self.features,
            models=list(self.models),
            l2_shared=self.l2_shared,
            l2_model=self.l2_model,
            folds=self.folds,
            dim=fit.dim,
            columns=np.asarray(fit.columns, dtype="<i4").tobytes(),
            weights=pack(fit.weights.ravel()),
            bias=[float(v) for v in fit.bias],
            platt_a=[float(v) for v in a],
            platt_b=[float(v) for v in b],
            shared_mean=self._shared_mean,
            group_keys=list(self._quality.keys),
            group_quality=pack(self._quality.values.ravel()),
            group_cost=pack(self._cost.values.ravel()),
            overall_quality=[float(v) for v in self._quality.overall],
            overall_cost=[float(v) for v in self._cost.overall],
            gate_lambdas=[float(v) for v in self.gate.lambdas],
            gate_keys=list(self.gate.keys),
            gate_choice=[[int(v) for v in row] for row in self.gate.choice],
            online=dict(self.online),
            online_prior=self.online_prior,
            clusters=None if self.clusters is None else self.clusters.state(),
            report=self.report,
        )

    @classmethod
    def from_state(cls, state: PredictorState) -> LearnedPredictor:
        predictor = cls(
            features=state.features,
            l2_shared=state.l2_shared,
            l2_model=state.l2_model,
            folds=state.folds,
            online_prior=state.online_prior,
        )
        m = len(state.models)
        columns = np.frombuffer(state.columns, dtype="<i4").astype(np.int64)
        weights = unpack(state.weights, columns.size * (m + 1)).reshape(columns.size, m + 1)
        predictor._fit = MultiTaskFit(
            dim=state.dim, columns=columns, weights=weights, bias=np.asarray(state.bias, dtype=np.float64)
        )
        predictor._platt = (np.asarray(state.platt_a), np.asarray(state.platt_b))
        predictor._shared_mean = state.shared_mean
        k = len(state.group_keys)
        for name, raw, overall in (
            ("_quality", state.group_quality, state.overall_quality),
            ("_cost", state.group_cost, state.overall_cost),
        ):
            table = GroupTable(
                list(state.group_keys), unpack(raw, k * m).reshape(k, m), np.asarray(overall, dtype=np.float64)
            )
            setattr(predictor, name, table)
        predictor.gate = Gate(
            lambdas=np.asarray(state.gate_lambdas, dtype=np.float64),
            keys=list(state.gate_keys),
            choice=np.asarray(state.gate_choice, dtype=np.int64).reshape(len(state.gate_keys), -1),
        )
        predictor.models = list(state.models)
        predictor.online = dict(state.online)
        predictor.clusters = (
            None if state.clusters is None else Clusters.from_state(state.clusters, state.features)
        )
        predictor.report = state.report
        return predictor
