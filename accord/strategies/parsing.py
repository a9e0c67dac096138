"""Strategies as data: the ``[strategies.NAME]`` tables of a mesh file and ``accord ask --strategy``.

Each table has a ``kind`` and that strategy's settings; cascade stages nest as inline tables, so a hybrid is a
few lines of TOML::

    [strategies.thrifty]
    kind = "cascade"
    verifier = "confidence"          # or "judge", or "scorer" with router = "router.msgpack"
    threshold = 0.7
    first = { kind = "single", tiers = ["device"] }
    then = { kind = "ensemble", k = 3, tiers = ["cloud"] }

On the command line a strategy is a name from the mesh file or a kind with optional settings:
``--strategy ensemble``, ``--strategy "debate:k=3,rounds=2"``, ``--strategy "moa:layers=3+3"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct, field

from accord.errors import AccordError
from accord.protocol.messages import Tier
from accord.routing.files import load_router
from accord.strategies.base import Strategy, StrategyConfigError
from accord.strategies.cascade import Cascade, JudgeVerifier, ScorerVerifier, SelfConfidence, Verifier
from accord.strategies.debate import Debate
from accord.strategies.ensemble import Ensemble
from accord.strategies.moa import MixtureOfAgents
from accord.strategies.route import Route, Scorer, Single
from accord.strategies.split import Split

__all__ = [
    "STRATEGY_KINDS",
    "StrategyConfigError",
    "StrategySpec",
    "build_strategy",
    "parse_strategy_option",
    "resolve_routers",
]

Tiers = Annotated[list[Tier], Meta(max_length=3)]
Fanout = Annotated[int, Meta(ge=1, le=16)]
_LOCAL = [Tier.DEVICE, Tier.EDGE]
_CLOUD = [Tier.CLOUD]


class _Spec(Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


class SingleSpec(_Spec, tag="single", frozen=True):
    tiers: Tiers = []


class RouteSpec(_Spec, tag="route", frozen=True):
    router: str | None = None
    """A router file (``accord router train``); none: the market alone decides."""
    threshold: float = 0.5
    weak: Tiers = field(default_factory=lambda: list(_LOCAL))
    strong: Tiers = field(default_factory=lambda: list(_CLOUD))
    fallback: bool = True
    value_micros: Annotated[int, Meta(ge=0)] | None = None
    """What one unit of quality is worth (micro-USD): escalate when score * value >= the price gap."""


class EnsembleSpec(_Spec, tag="ensemble", frozen=True):
    k: Fanout = 3
    tiers: Tiers = []
    combine: Literal["vote", "judge"] = "vote"
    judge_tiers: Tiers = field(default_factory=lambda: list(_CLOUD))


class MoaSpec(_Spec, tag="moa", frozen=True):
    layers: Annotated[list[Fanout], Meta(min_length=1, max_length=4)] = field(default_factory=lambda: [3])
    proposer_tiers: Tiers = []
    aggregator_tiers: Tiers = field(default_factory=lambda: list(_CLOUD))


class DebateSpec(_Spec, tag="debate", frozen=True):
    k: Fanout = 3
    rounds: Annotated[int, Meta(ge=1, le=8)] = 2
    tiers: Tiers = []
    stop_on_consensus: bool = True


class SplitSpec(_Spec, tag="split", frozen=True):
    local_tiers: Tiers = field(default_factory=lambda: list(_LOCAL))
    remote_tiers: Tiers = field(default_factory=lambda: list(_CLOUD))
    chunk_chars: Annotated[int, Meta(ge=200)] = 2000
    max_chunks: Fanout = 8
    local_only: bool = False


class CascadeSpec(_Spec, tag="cascade", frozen=True):
    first: StrategySpec = field(default_factory=lambda: SingleSpec(tiers=list(_LOCAL)))
    then: StrategySpec = field(default_factory=lambda: SingleSpec(tiers=list(_CLOUD)))
    verifier: Literal["confidence", "judge", "scorer"] = "confidence"
    threshold: float | None = None
    """Confidence below which to escalate (confidence 0.7, judge 0.7); for the scorer, the router score at or
    above which to escalate (0.5)."""
    router: str | None = None
    """The scorer's router file (a ``cascade`` router reads the first answer)."""
    judge_tiers: Tiers = field(default_factory=lambda: list(_CLOUD))
    with_draft: bool = True


StrategySpec = SingleSpec | RouteSpec | CascadeSpec | EnsembleSpec | MoaSpec | DebateSpec | SplitSpec

STRATEGY_KINDS: dict[str, type[_Spec]] = {
    "single": SingleSpec,
    "route": RouteSpec,
    "cascade": CascadeSpec,
    "ensemble": EnsembleSpec,
    "moa": MoaSpec,
    "debate": DebateSpec,
    "split": SplitSpec,
}


def _router(path: str | None, base: Path | None, where: str) -> Scorer:
    if path is None:
        raise StrategyConfigError(f"{where}: needs router = FILE")
    file = Path(path) if base is None else base / path
    try:
        return load_router(file)[0]
    except (AccordError, OSError) as exc:
        raise StrategyConfigError(f"{where}: cannot load router {file}: {exc}") from exc


def _verifier(spec: CascadeSpec, base: Path | None) -> Verifier:
    if spec.verifier == "confidence":
        return SelfConfidence(threshold=0.7 if spec.threshold is None else spec.threshold)
    if spec.verifier == "judge":
        return JudgeVerifier(
            tiers=tuple(spec.judge_tiers), threshold=0.7 if spec.threshold is None else spec.threshold
        )
    return ScorerVerifier(
        router=_router(spec.router, base, "cascade scorer"),
        threshold=0.5 if spec.threshold is None else spec.threshold,
    )


def resolve_routers(spec: StrategySpec, base: Path) -> StrategySpec:
    """``spec`` with every router file path taken relative to ``base`` (a mesh file's directory)."""
    replace = msgspec.structs.replace
    if isinstance(spec, RouteSpec) and spec.router is not None:
        return replace(spec, router=str(base / spec.router))
    if isinstance(spec, CascadeSpec):
        router = str(base / spec.router) if spec.router is not None else None
        return replace(
            spec, router=router, first=resolve_routers(spec.first, base), then=resolve_routers(spec.then, base)
        )
    return spec


def build_strategy(spec: StrategySpec, *, base: Path | None = None) -> Strategy:
    """The strategy a spec describes; router files are read relative to ``base`` (the mesh file's directory)."""
    match spec:
        case SingleSpec():
            return Single(tuple(spec.tiers))
        case RouteSpec():
            router = _router(spec.router, base, "route") if spec.router is not None else None
            return Route(
                router, spec.threshold, tuple(spec.weak), tuple(spec.strong), spec.fallback, spec.value_micros
            )
        case EnsembleSpec():
            return Ensemble(spec.k, tuple(spec.tiers), spec.combine, tuple(spec.judge_tiers))
        case MoaSpec():
            return MixtureOfAgents(tuple(spec.layers), tuple(spec.proposer_tiers), tuple(spec.aggregator_tiers))
        case DebateSpec():
            return Debate(spec.k, spec.rounds, tuple(spec.tiers), spec.stop_on_consensus)
        case SplitSpec():
            return Split(
                tuple(spec.local_tiers),
                tuple(spec.remote_tiers),
                spec.chunk_chars,
                spec.max_chunks,
                spec.local_only,
            )
        case CascadeSpec():
            return Cascade(
                build_strategy(spec.first, base=base),
                build_strategy(spec.then, base=base),
                _verifier(spec, base),
                spec.with_draft,
            )
    raise StrategyConfigError(f"unknown strategy spec {spec!r}")  # pragma: no cover - the union is closed


def _value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "+" in text:
        return [_value(part) for part in text.split("+")]
    return text


_LISTS = frozenset({"tiers", "weak", "strong", "judge_tiers", "proposer_tiers", "aggregator_tiers", "layers"})
_LISTS |= {"local_tiers", "remote_tiers"}


def parse_strategy_option(text: str, named: dict[str, StrategySpec] | None = None) -> StrategySpec:
    """``NAME`` (a mesh file's strategy), ``KIND`` or ``KIND:key=value,key=value`` (lists joined by ``+``)."""
    if named and text in named:
        return named[text]
    kind, _, rest = text.partition(":")
    if kind not in STRATEGY_KINDS:
        known = sorted(STRATEGY_KINDS) + sorted(named or {})
        raise StrategyConfigError(f"unknown strategy {kind!r}; choose one of: {', '.join(known)}")
    fields: dict[str, object] = {"kind": kind}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise StrategyConfigError(f"strategy setting {item!r} is not key=value")
        parsed = _value(value.strip())
        if key.strip() in _LISTS and not isinstance(parsed, list):
            parsed = [parsed]
        fields[key.strip()] = parsed
    try:
        spec: StrategySpec = msgspec.convert(fields, type=StrategySpec)
    except msgspec.ValidationError as exc:
        raise StrategyConfigError(f"strategy {text!r}: {exc}") from exc
    return spec
