"""Routers that learn from outcome logs: the outcome record, query features, the router models and their files.

- :mod:`.base`: the :class:`Router` port and the request-time :class:`Query`.
- Routers: :class:`SubjectRouter` (category baseline), :class:`LogisticRouter` (per-model logistic regression on
  hashed text features), :class:`MFRouter` (matrix factorisation), :class:`BanditRouter` (LinUCB / Thompson,
  learns online), :class:`CascadeRouter` (scores the weak model's answer, for cascades).
- :mod:`.records`: THE outcome record (one model on one query) and its JSONL logs; :mod:`.store`: save / load
  routers as msgpack or JSON. Their evaluation (metrics, cross-fitting, data sets) lives in :mod:`accord.bench`.
"""

from __future__ import annotations

from accord.routing.bandit import BanditRouter, OnlineRun, simulate_online
from accord.routing.base import Query, Router, RouterError
from accord.routing.common import PairRouter
from accord.routing.features import TextFeaturizer
from accord.routing.files import ROUTER_KINDS, RouterFile, load_router, make_router, save_router
from accord.routing.logistic import LogisticRouter
from accord.routing.mf import MFRouter
from accord.routing.subject import SubjectRouter
from accord.routing.table import PairTable, infer_pair
from accord.routing.verifier import CascadeRouter

__all__ = [
    "ROUTER_KINDS",
    "BanditRouter",
    "CascadeRouter",
    "LogisticRouter",
    "MFRouter",
    "OnlineRun",
    "PairRouter",
    "PairTable",
    "Query",
    "Router",
    "RouterError",
    "RouterFile",
    "SubjectRouter",
    "TextFeaturizer",
    "infer_pair",
    "load_router",
    "make_router",
    "save_router",
    "simulate_online",
]
