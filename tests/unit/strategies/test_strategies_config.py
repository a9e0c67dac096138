"""Strategies as data: ``--strategy`` values, ``[strategies.NAME]`` TOML tables, and what they build."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
import pytest

from accord.bench.data.synthetic import synthetic_outcomes
from accord.protocol.messages import Tier
from accord.routing.files import save_router
from accord.routing.subject import SubjectRouter
from accord.strategies import (
    STRATEGY_KINDS,
    Cascade,
    Debate,
    Ensemble,
    JudgeVerifier,
    MixtureOfAgents,
    Route,
    ScorerVerifier,
    SelfConfidence,
    Single,
    Split,
    StrategyConfigError,
    StrategySpec,
    build_strategy,
    parse_strategy_option,
)
from accord.strategies.parsing import (
    CascadeSpec,
    DebateSpec,
    EnsembleSpec,
    MoaSpec,
    RouteSpec,
    SingleSpec,
    SplitSpec,
)

D, E, C = Tier.DEVICE, Tier.EDGE, Tier.CLOUD


def _build(text: str) -> object:
    return build_strategy(parse_strategy_option(text))


# --- --strategy values -------------------------------------------------------------------------------------------
def test_every_kind_parses_bare_with_its_defaults() -> None:
    # the option's kinds are the config union's tags: a kind a mesh file takes is one --strategy takes too
    assert {t.__struct_config__.tag: t for t in typing.get_args(StrategySpec)} == STRATEGY_KINDS
    for kind, spec_type in STRATEGY_KINDS.items():
        spec = parse_strategy_option(kind)
        assert type(spec) is spec_type
        assert spec == msgspec.convert({"kind": kind}, type=StrategySpec)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("single:tiers=device", SingleSpec(tiers=[D])),
        ("single:tiers=device+edge", SingleSpec(tiers=[D, E])),
        (
            "route:threshold=0.3,weak=device,strong=cloud+edge,fallback=false",
            RouteSpec(threshold=0.3, weak=[D], strong=[C, E], fallback=False),
        ),
        ("ensemble:tiers=cloud", EnsembleSpec(tiers=[C])),
        ("ensemble:k=5,combine=judge,judge_tiers=edge", EnsembleSpec(k=5, combine="judge", judge_tiers=[E])),
        ("moa:layers=3+3", MoaSpec(layers=[3, 3])),
        ("moa:layers=2", MoaSpec(layers=[2])),  # a single value still makes a list
        (
            "moa:layers=4+2,proposer_tiers=device,aggregator_tiers=edge",
            MoaSpec(layers=[4, 2], proposer_tiers=[D], aggregator_tiers=[E]),
        ),
        ("debate:k=3,rounds=2", DebateSpec(k=3, rounds=2)),
        (
            "debate: k = 4 , rounds = 3 , stop_on_consensus = False ",
            DebateSpec(k=4, rounds=3, stop_on_consensus=False),
        ),
        (
            "split:chunk_chars=500,local_only=true,remote_tiers=edge",
            SplitSpec(chunk_chars=500, local_only=True, remote_tiers=[E]),
        ),
        (
            "cascade:verifier=judge,threshold=0.8,judge_tiers=edge",
            CascadeSpec(verifier="judge", threshold=0.8, judge_tiers=[E]),
        ),
        ("cascade:with_draft=false", CascadeSpec(with_draft=False)),
    ],
)
def test_parse_strategy_option(text: str, spec: StrategySpec) -> None:
    assert parse_strategy_option(text) == spec


def test_a_named_strategy_wins_over_parsing() -> None:
    hybrid = CascadeSpec(then=EnsembleSpec(k=2, tiers=[C]))
    named: dict[str, StrategySpec] = {"thrifty": hybrid}
    assert parse_strategy_option("thrifty", named) is hybrid
    assert parse_strategy_option("debate", named) == DebateSpec()
    with pytest.raises(StrategyConfigError, match="thrifty"):  # the error lists the mesh's names too
        parse_strategy_option("thrify", named)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown strategy 'nope'; choose one of: cascade, debate, ensemble, moa, route, single, split"),
        ("Debate", "unknown strategy 'Debate'"),
        ("debate:k", "strategy setting 'k' is not key=value"),
        ("debate:q=1", "unknown field `q`"),
        ("debate:k=0", "Expected `int` >= 1 - at `$.k`"),
        ("debate:k=x", "Expected `int`, got `str` - at `$.k`"),
        ("debate:rounds=9", "Expected `int` <= 8 - at `$.rounds`"),
        ("ensemble:k=2.5", "Expected `int`, got `float` - at `$.k`"),
        ("ensemble:k=17", "at `$.k`"),
        ("ensemble:combine=best", "at `$.combine`"),
        ("ensemble:tiers=moon", "Invalid enum value 'moon' - at `$.tiers[0]`"),
        ("single:tiers=device+edge+cloud+device", "at `$.tiers`"),
        ("moa:layers=1+2+3+4+5", "length <= 4 - at `$.layers`"),
        ("moa:layers=0", "at `$.layers[0]`"),
        ("split:chunk_chars=100", "Expected `int` >= 200 - at `$.chunk_chars`"),
        ("cascade:verifier=oracle", "at `$.verifier`"),
        ("cascade:first=single", "Expected `object`, got `str` - at `$.first`"),
    ],
)
def test_bad_options_raise_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(StrategyConfigError) as info:
        parse_strategy_option(text)
    assert message in str(info.value)
    if ":" in text:
        assert repr(text) in str(info.value) or "is not key=value" in str(info.value)  # names the value given


# --- TOML tables -------------------------------------------------------------------------------------------------
STRATEGIES_TOML = """
[thrifty]
kind = "cascade"
verifier = "judge"
threshold = 0.8
judge_tiers = ["edge"]
first = { kind = "single", tiers = ["device"] }

[thrifty.then]                      # a nested stage as a sub-table
kind = "cascade"
first = { kind = "ensemble", k = 2, tiers = ["edge"] }
then = { kind = "debate", k = 3, rounds = 2, tiers = ["cloud"] }

[layered]
kind = "moa"
layers = [3, 2]
aggregator_tiers = ["edge"]

[private]
kind = "split"
local_tiers = ["device"]
max_chunks = 4
"""


def test_nested_cascade_from_toml() -> None:
    specs = msgspec.toml.decode(STRATEGIES_TOML.encode(), type=dict[str, StrategySpec])
    assert specs["thrifty"] == CascadeSpec(
        first=SingleSpec(tiers=[D]),
        then=CascadeSpec(first=EnsembleSpec(k=2, tiers=[E]), then=DebateSpec(k=3, rounds=2, tiers=[C])),
        verifier="judge",
        threshold=0.8,
        judge_tiers=[E],
    )
    assert specs["layered"] == MoaSpec(layers=[3, 2], aggregator_tiers=[E])
    assert specs["private"] == SplitSpec(local_tiers=[D], max_chunks=4)

    hybrid = build_strategy(specs["thrifty"])
    assert hybrid == Cascade(
        first=Single((D,)),
        then=Cascade(
            first=Ensemble(k=2, tiers=(E,)),
            then=Debate(k=3, rounds=2, tiers=(C,)),
            verifier=SelfConfidence(0.7),
        ),
        verifier=JudgeVerifier(tiers=(E,), threshold=0.8),
    )
    assert build_strategy(specs["layered"]) == MixtureOfAgents(layers=(3, 2), aggregator_tiers=(E,))
    assert build_strategy(specs["private"]) == Split(local_tiers=(D,), max_chunks=4)


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ('[x]\nkind = "cascade"\nfirst = { kind = "nope" }', "$[...].first.kind"),
        ('[x]\nkind = "cascade"\nfirst = { kind = "single", k = 3 }', "$[...].first"),
        ("[x]\nk = 3", "missing required field `kind`"),
        ('[x]\nkind = "debate"\nrounds = 0', "$[...].rounds"),
    ],
)
def test_bad_toml_tables_say_where(toml: str, where: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=None) as info:
        msgspec.toml.decode(toml.encode(), type=dict[str, StrategySpec])
    assert where in str(info.value)


def test_spec_round_trips_through_plain_data() -> None:
    spec = CascadeSpec(first=EnsembleSpec(k=2, tiers=[D, E]), then=MoaSpec(layers=[2, 2]), verifier="confidence")
    data = msgspec.to_builtins(spec)
    assert data["kind"] == "cascade" and data["then"]["kind"] == "moa"
    assert msgspec.convert(data, type=StrategySpec) == spec
    assert msgspec.json.decode(msgspec.json.encode(spec), type=StrategySpec) == spec


# --- build_strategy ----------------------------------------------------------------------------------------------
def test_build_each_kind_with_its_settings() -> None:
    assert _build("single:tiers=edge") == Single((E,))
    assert _build("route:threshold=0.25,fallback=false") == Route(None, 0.25, (D, E), (C,), False)
    assert _build("ensemble:k=4,tiers=cloud,combine=judge") == Ensemble(4, (C,), "judge", (C,))
    assert _build("moa:layers=3+3") == MixtureOfAgents((3, 3), (), (C,))
    assert _build("debate:k=5,rounds=3,tiers=device,stop_on_consensus=false") == Debate(5, 3, (D,), False)
    assert _build("split:chunk_chars=800,max_chunks=2,local_only=true") == Split((D, E), (C,), 800, 2, True)
    default = _build("cascade")
    assert default == Cascade(Single((D, E)), Single((C,)), SelfConfidence(0.7), True)
    assert _build("cascade:threshold=0.4") == Cascade(verifier=SelfConfidence(0.4))
    assert _build("cascade:verifier=judge") == Cascade(verifier=JudgeVerifier((C,), 0.7))
    assert _build("cascade:with_draft=false") == Cascade(with_draft=False)


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("routers")
    router = SubjectRouter()
    router.fit(synthetic_outcomes(60, seed=3))
    save_router(router, base / "subject.msgpack")
    (base / "garbage.msgpack").write_bytes(b"\x00not a router")
    return base


def test_router_files_are_read_relative_to_the_mesh_file(router_dir: Path) -> None:
    route = build_strategy(parse_strategy_option("route:router=subject.msgpack,threshold=0.3"), base=router_dir)
    assert isinstance(route, Route) and isinstance(route.router, SubjectRouter)
    assert route.threshold == 0.3 and route.router.fitted
    cascade = build_strategy(
        parse_strategy_option("cascade:verifier=scorer,router=subject.msgpack"), base=router_dir
    )
    assert isinstance(cascade, Cascade) and isinstance(cascade.verifier, ScorerVerifier)
    assert cascade.verifier.threshold == 0.5 and isinstance(cascade.verifier.router, SubjectRouter)
    absolute = parse_strategy_option(f"route:router={router_dir / 'subject.msgpack'}")
    assert isinstance(build_strategy(absolute), Route)


def test_scorer_without_a_router_is_a_config_error() -> None:
    with pytest.raises(StrategyConfigError, match="cascade scorer: needs router = FILE"):
        _build("cascade:verifier=scorer")


def test_an_unreadable_router_file_is_a_config_error(router_dir: Path) -> None:
    with pytest.raises(StrategyConfigError, match="cannot load router"):
        build_strategy(parse_strategy_option("route:router=garbage.msgpack"), base=router_dir)


def test_a_missing_router_file_is_a_config_error(router_dir: Path) -> None:
    # `accord ask --strategy route:router=typo.msgpack` must say which file, not crash with FileNotFoundError.
    with pytest.raises(StrategyConfigError, match=r"missing\.msgpack"):
        build_strategy(parse_strategy_option("route:router=missing.msgpack"), base=router_dir)
    with pytest.raises(StrategyConfigError, match=r"missing\.msgpack"):
        build_strategy(parse_strategy_option("cascade:verifier=scorer,router=missing.msgpack"), base=router_dir)
