"""Routers that learn from outcome logs: the outcome record, query features, the router models and their files.

- :mod:`.base`: the :class:`Router` port (pair routers) and the request-time :class:`Query`.
- Over any number of models: :class:`LearnedPredictor` (calibrated P(good answer | query, model), a
  :class:`~accord.protocol.market.QualityPredictor` for the requester's ranking; :mod:`.multitask`,
  :mod:`.calibration`, :mod:`.clusters`, :mod:`.groups`, :mod:`.gate`), fitted on an :class:`OutcomeMatrix`.
- Pair routers: :class:`SubjectRouter` (category baseline), :class:`LogisticRouter` (per-model logistic
  regression on hashed text features), :class:`MFRouter` (matrix factorisation), :class:`BanditRouter` (LinUCB /
  Thompson, learns online; any number of arms), :class:`CascadeRouter` (scores the weak model's answer, for
  cascades), :class:`PredictorRouter` (the learned predictor on a pair).
- :mod:`.records`: THE outcome record (one model on one query) and its JSONL logs; :mod:`.files`: save / load
  routers and predictors as msgpack or JSON. Their evaluation (metrics, cross-fitting, data sets) lives in
  :mod:`accord.bench`.
"""

from __future__ import annotations

from accord.routing.bandit import BanditRouter, OnlineRun, simulate_online, simulate_online_models
from accord.routing.base import Query, Router, RouterError
from accord.routing.common import PairRouter
from accord.routing.features import TextFeaturizer
from accord.routing.files import (
    DEFAULT_KINDS,
    ROUTER_KINDS,
    RouterFile,
    load_predictor,
    load_router,
    make_router,
    save_predictor,
    save_router,
)
from accord.routing.logistic import LogisticRouter
from accord.routing.matrix import OutcomeMatrix, parse_models
from accord.routing.mf import MFRouter
from accord.routing.predictor import FitReport, LearnedPredictor, Plan
from accord.routing.predictor_pair import PredictorRouter
from accord.routing.subject import SubjectRouter
from accord.routing.table import PairTable, infer_pair
from accord.routing.verifier import CascadeRouter

__all__ = [
    "DEFAULT_KINDS",
    "ROUTER_KINDS",
    "BanditRouter",
    "CascadeRouter",
    "FitReport",
    "LearnedPredictor",
    "LogisticRouter",
    "MFRouter",
    "OnlineRun",
    "OutcomeMatrix",
    "PairRouter",
    "PairTable",
    "Plan",
    "PredictorRouter",
    "Query",
    "Router",
    "RouterError",
    "RouterFile",
    "SubjectRouter",
    "TextFeaturizer",
    "infer_pair",
    "load_predictor",
    "load_router",
    "make_router",
    "parse_models",
    "save_predictor",
    "save_router",
    "simulate_online",
    "simulate_online_models",
]
