"""Routers that learn from outcome logs, and their evaluation as RouteLLM and RouterBench do it.

- :mod:`.base`: the :class:`Router` port and the request-time :class:`Query`.
- Routers: :class:`SubjectRouter` (category baseline), :class:`LogisticRouter` (per-model logistic regression on
  hashed text features), :class:`MFRouter` (matrix factorisation), :class:`BanditRouter` (LinUCB / Thompson,
  learns online), :class:`CascadeRouter` (scores the weak model's answer, for cascades).
- :mod:`.metrics`: PGR, APGR, CPT, the non-decreasing cost-quality hull and AIQ; :mod:`.evaluate`: reports,
  baselines (weak, strong, random, oracle) and cross-fitting.
- :mod:`.store`: save / load routers as msgpack or JSON; :mod:`.datasets`: outcome records from the RouteLLM sets.
"""

from __future__ import annotations

from accord.agents.routers.bandit import BanditRouter, OnlineRun, simulate_online
from accord.agents.routers.base import Query, Router, RouterError
from accord.agents.routers.cascade import CascadeRouter
from accord.agents.routers.common import PairRouter
from accord.agents.routers.evaluate import Report, baseline_reports, crossfit_scores, evaluate_scores, fold_ids
from accord.agents.routers.features import TextFeaturizer
from accord.agents.routers.logistic import LogisticRouter
from accord.agents.routers.metrics import (
    Curve,
    aiq,
    apgr,
    cpt,
    nondecreasing_hull,
    oracle_curve,
    pgr,
    random_curve,
    routing_curve,
)
from accord.agents.routers.mf import MFRouter
from accord.agents.routers.store import ROUTER_KINDS, RouterFile, load_router, make_router, save_router
from accord.agents.routers.subject import SubjectRouter
from accord.agents.routers.table import PairTable, infer_pair

__all__ = [
    "ROUTER_KINDS",
    "BanditRouter",
    "CascadeRouter",
    "Curve",
    "LogisticRouter",
    "MFRouter",
    "OnlineRun",
    "PairRouter",
    "PairTable",
    "Query",
    "Report",
    "Router",
    "RouterError",
    "RouterFile",
    "SubjectRouter",
    "TextFeaturizer",
    "aiq",
    "apgr",
    "baseline_reports",
    "cpt",
    "crossfit_scores",
    "evaluate_scores",
    "fold_ids",
    "infer_pair",
    "load_router",
    "make_router",
    "nondecreasing_hull",
    "oracle_curve",
    "pgr",
    "random_curve",
    "routing_curve",
    "save_router",
    "simulate_online",
]
