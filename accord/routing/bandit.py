"""An online contextual bandit over any number of models (arms): LinUCB or linear Thompson sampling, disjoint
models.

Each arm ``a`` keeps a ridge regression of its reward on the query's features ``x`` (hashed text, shape, kind and
category, ``2**dim_bits`` dense dimensions plus a bias): ``A_a = lam*I + sum x x^T``, ``b_a = sum r x``,
``theta_a = A_a^-1 b_a``. :meth:`BanditRouter.select` picks an arm for a query, exploring:

- ``ucb`` (LinUCB, Li et al. 2010): ``argmax_a theta_a . x + alpha * sqrt(x^T A_a^-1 x)``;
- ``thompson`` (Agrawal and Goyal 2013): draw ``r_a ~ N(theta_a . x, v^2 x^T A_a^-1 x)`` per arm, take the best.

Only the chosen arm's reward is observed: :meth:`BanditRouter.update` (Sherman-Morrison, O(d^2)). The reward is
the caller's: e.g. the 0..1 quality; :meth:`select` subtracts a price per arm. The arms are a (weak, strong) pair
by default, or any list (``arms=``, or :meth:`BanditRouter.fit_matrix` on an
:class:`~accord.routing.matrix.OutcomeMatrix`: one arm per model). :meth:`fit` warms the bandit from a log
with full information (every arm's outcome of every query it has); ``score`` is ``theta_strong . x - theta_weak
. x`` (first and last arm) without exploration, so the pair bandit is evaluated on the same curves as the offline
routers. :func:`simulate_online` replays a pair table, :func:`simulate_online_models` an N-model matrix, as a
stream with bandit feedback only.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.common import PairRouter, pack, unpack
from accord.routing.features import TextFeaturizer
from accord.routing.matrix import OutcomeMatrix
from accord.routing.table import PairTable

__all__ = ["BanditRouter", "BanditState", "OnlineRun", "Policy", "simulate_online", "simulate_online_models"]

Policy = Literal["ucb", "thompson"]


class BanditState(msgspec.Struct, frozen=True, kw_only=True, tag="bandit"):
    features: TextFeaturizer
    policy: str
    alpha: float
    ridge: float
    a_inv: list[bytes]
    b: list[bytes]
    pulls: list[int]
    arms: list[str] = []
    """Every arm, in order (empty in a pair bandit's file: then weak and strong)."""


class BanditRouter(PairRouter):
    kind = "bandit"

    def __init__(
        self,
        weak: str = "",
        strong: str = "",
        *,
        features: TextFeaturizer | None = None,
        policy: Policy = "ucb",
        alpha: float = 0.5,
        ridge: float = 1.0,
        arms: Sequence[str] = (),
    ) -> None:
        if len(arms) == 1:
            raise RouterError("bad_input", "a bandit needs at least two arms")
        super().__init__(arms[0] if arms else weak, arms[-1] if arms else strong)
        self.features = features if features is not None else TextFeaturizer(dim_bits=9, bigrams=False)
        self.policy: Policy = policy
        self.alpha = alpha
        self.ridge = ridge
        self._set_arms(list(arms) if arms else [self.weak, self.strong])
        if all(self._arms):
            self.fitted = True  # a bandit may start cold and learn online

    def _set_arms(self, arms: list[str]) -> None:
        d = self.features.dim + 1
        self._arms = arms
        self._a_inv = [np.eye(d) / self.ridge for _ in arms]
        self._b = [np.zeros(d) for _ in arms]
        self.pulls = [0 for _ in arms]

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(self._arms)

    def vectors(self, queries: Sequence[Query]) -> FloatArray:
        """Dense feature rows (with a trailing bias column) for ``queries``."""
        d = self.features.dim
        out = np.zeros((len(queries), d + 1))
        for i, query in enumerate(queries):
            for key, value in self.features.row(query).items():
                out[i, key] += value
        out[:, d] = 1.0
        return out

    def _arm(self, arm: str) -> int:
        if arm not in self.arms or not arm:
            raise RouterError("unknown_arm", f"{arm!r} is not one of {self.arms}")
        return self.arms.index(arm)

    def fit_table(self, table: PairTable) -> None:
        """Warm start with full information: both arms' rewards (0..1 quality) for every logged query."""
        self._begin_fit(table)
        self._set_arms([table.weak, table.strong])
        quality = np.stack([table.q_weak, table.q_strong], axis=1) / table.scale
        self._warm(self.vectors(table.queries), quality)

    def fit_matrix(self, matrix: OutcomeMatrix) -> None:
        """Warm start one arm per model of ``matrix`` from every outcome it has (0..1 quality)."""
        self.weak, self.strong = matrix.models[0], matrix.models[-1]
        self._set_arms(list(matrix.models))
        self._warm(self.vectors(matrix.queries), matrix.quality)

    def _warm(self, x: FloatArray, quality: FloatArray) -> None:
        eye = np.eye(x.shape[1]) * self.ridge
        for arm in range(len(self._arms)):
            seen = ~np.isnan(quality[:, arm])
            rows = x[seen]
            self._a_inv[arm] = np.asarray(np.linalg.inv(eye + rows.T @ rows), dtype=np.float64)
            self._b[arm] = rows.T @ quality[seen, arm]
            self.pulls[arm] = int(seen.sum())
        self.fitted = True

    def predict_all(self, queries: Sequence[Query]) -> FloatArray:
        """Expected reward of every arm for every query (no exploration), ``(len(queries), len(arms))``."""
        self._check()
        return self._means(self.vectors(queries))

    def predict(self, query: Query) -> dict[str, float]:
        means = self.predict_all([query])[0]
        return {arm: float(v) for arm, v in zip(self._arms, means, strict=True)}

    def _means(self, x: FloatArray) -> FloatArray:
        thetas = np.stack([a @ b for a, b in zip(self._a_inv, self._b, strict=True)], axis=1)
        return np.asarray(np.einsum("ij,jk->ik", x, thetas, optimize=False), dtype=np.float64)

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        means = self._means(self.vectors(queries))
        return means[:, 0], means[:, -1]

    def select(
        self,
        query: Query,
        *,
        penalty: Sequence[float] | Mapping[str, float] = (),
        rng: random.Random | None = None,
    ) -> str:
        """The arm to pull for ``query`` (exploring); ``penalty`` is subtracted per arm (e.g. a price), given in
        arm order or by arm name (missing: 0)."""
        self._check()
        if isinstance(penalty, Mapping):
            penalty = [penalty.get(arm, 0.0) for arm in self._arms]
        penalty = list(penalty) + [0.0] * (len(self._arms) - len(penalty))
        x = self.vectors([query])[0]
        values = []
        for arm in range(len(self._arms)):
            mean = float(np.multiply(self._a_inv[arm] @ self._b[arm], x).sum())
            spread = float(np.sqrt(max(0.0, float(np.multiply(x, self._a_inv[arm] @ x).sum()))))
            if self.policy == "thompson":
                draw = (rng or random.Random()).gauss(mean, self.alpha * spread)
                values.append(draw - penalty[arm])
            else:
                values.append(mean + self.alpha * spread - penalty[arm])
        return self.arms[int(np.argmax(values))]

    def update(self, query: Query, arm: str, reward: float) -> None:
        """Learn from one observed reward of ``arm`` on ``query``."""
        index = self._arm(arm)
        x = self.vectors([query])[0]
        a_inv = self._a_inv[index]
        ax = a_inv @ x
        self._a_inv[index] = a_inv - np.outer(ax, ax) / (1.0 + float(np.multiply(x, ax).sum()))
        self._b[index] = self._b[index] + reward * x
        self.pulls[index] += 1
        self.fitted = True

    def state(self) -> BanditState:
        return BanditState(
            features=self.features,
            policy=self.policy,
            alpha=self.alpha,
            ridge=self.ridge,
            a_inv=[pack(a.ravel()) for a in self._a_inv],
            b=[pack(b) for b in self._b],
            pulls=list(self.pulls),
            arms=list(self._arms) if len(self._arms) != 2 else [],
        )

    @classmethod
    def from_state(cls, weak: str, strong: str, state: BanditState) -> BanditRouter:
        if state.policy not in ("ucb", "thompson"):
            raise RouterError("bad_file", f"unknown bandit policy {state.policy!r}")
        policy: Policy = "ucb" if state.policy == "ucb" else "thompson"
        router = cls(
            weak,
            strong,
            features=state.features,
            policy=policy,
            alpha=state.alpha,
            ridge=state.ridge,
            arms=state.arms,
        )
        d = state.features.dim + 1
        router._a_inv = [unpack(a, d * d).reshape(d, d) for a in state.a_inv]
        router._b = [unpack(b, d) for b in state.b]
        router.pulls = list(state.pulls)
        router.fitted = True
        return router


@dataclass(frozen=True)
class OnlineRun:
    """What a bandit achieved on a stream: mean quality (the log's scale), share of strong pulls, and the mean
    reward lost against the per-query best arm (regret)."""

    quality: float
    strong_share: float
    mean_regret: float
    steps: int


def simulate_online(
    router: BanditRouter, table: PairTable, *, strong_price: float = 0.0, seed: int = 0
) -> OnlineRun:
    """Stream the table's queries in a seeded random order with bandit feedback: the bandit learns only the
    pulled arm's 0..1 quality and picks by predicted quality minus ``strong_price`` for the strong arm."""
    rng = random.Random(seed)
    order = list(range(len(table)))
    rng.shuffle(order)
    penalty = (0.0, strong_price)
    quality = regret = 0.0
    strong = 0
    for i in order:
        query = table.queries[i]
        rewards = (table.q_weak[i] / table.scale, table.q_strong[i] / table.scale - strong_price)
        arm = router.select(query, penalty=penalty, rng=rng)
        index = 0 if arm == router.weak else 1
        reward = float(rewards[index])
        router.update(query, arm, reward + penalty[index])
        quality += float(table.q_weak[i] if index == 0 else table.q_strong[i])
        strong += index
        regret += max(rewards) - reward
    n = max(1, len(order))
    return OnlineRun(quality=quality / n, strong_share=strong / n, mean_regret=regret / n, steps=len(order))


def simulate_online_models(
    router: BanditRouter, matrix: OutcomeMatrix, *, prices: Sequence[float], seed: int = 0
) -> OnlineRun:
    """Stream the complete rows of ``matrix`` in a seeded random order with bandit feedback: the bandit picks by
    its (exploring) value minus the arm's ``prices`` entry (quality units, e.g. ``lambda * mean cost``), learns
    only the pulled arm's 0..1 quality. ``strong_share`` is the share of pulls of the last arm."""
    if list(router.arms) != list(matrix.models) or len(prices) != len(matrix.models):
        raise RouterError("bad_input", "the bandit's arms, the matrix's models and the prices must line up")
    table = matrix.complete()
    rng = random.Random(seed)
    order = list(range(len(table)))
    rng.shuffle(order)
    quality = regret = 0.0
    last = 0
    for i in order:
        query = table.queries[i]
        rewards = table.quality[i] - np.asarray(prices)
        arm = router.select(query, penalty=prices, rng=rng)
        index = router.arms.index(arm)
        router.update(query, arm, float(table.quality[i, index]))
        quality += float(table.quality[i, index])
        last += index == len(router.arms) - 1
        regret += float(rewards.max() - rewards[index])
    n = max(1, len(order))
    return OnlineRun(quality=quality / n, strong_share=last / n, mean_regret=regret / n, steps=len(order))
