"""Collaboration strategies: requester-side policies that turn one question into market tasks and combine the
answers (route, cascade, ensemble, mixture-of-agents, debate, split, and any nesting of them).

Use::

    from accord.strategies import Ask, Cascade, Ensemble, Single, run_strategy
    from accord.protocol.messages import Tier

    hybrid = Cascade(first=Single((Tier.DEVICE,)), then=Ensemble(k=3, tiers=(Tier.CLOUD,)))
    result = await run_strategy(requester, hybrid, Ask("What is 17 * 23?", form="math"),
                                budget_micros=20_000, deadline_ms=30_000)
    print(result.answer, result.spent_micros, [c.role for c in result.calls])
"""

from accord.strategies.answers import agrees, extract_choice, extract_number, majority, normalise, similarity
from accord.strategies.backend import StrategyBackend
from accord.strategies.base import (
    DEFAULT_SYSTEM,
    Answer,
    Ask,
    CallRecord,
    Session,
    Strategy,
    StrategyFailed,
    StrategyResult,
)
from accord.strategies.cascade import Cascade, JudgeVerifier, ScorerVerifier, SelfConfidence, Verifier
from accord.strategies.debate import Debate
from accord.strategies.ensemble import Ensemble
from accord.strategies.moa import MixtureOfAgents
from accord.strategies.parsing import (
    STRATEGY_KINDS,
    StrategyConfigError,
    StrategySpec,
    build_strategy,
    parse_strategy_option,
)
from accord.strategies.records import outcome_of
from accord.strategies.route import Route, Single
from accord.strategies.run import run_strategy, score_by_agreement
from accord.strategies.split import Split

__all__ = [
    "DEFAULT_SYSTEM",
    "STRATEGY_KINDS",
    "Answer",
    "Ask",
    "CallRecord",
    "Cascade",
    "Debate",
    "Ensemble",
    "JudgeVerifier",
    "MixtureOfAgents",
    "Route",
    "ScorerVerifier",
    "SelfConfidence",
    "Session",
    "Single",
    "Split",
    "Strategy",
    "StrategyBackend",
    "StrategyConfigError",
    "StrategyFailed",
    "StrategyResult",
    "StrategySpec",
    "Verifier",
    "agrees",
    "build_strategy",
    "extract_choice",
    "extract_number",
    "majority",
    "normalise",
    "outcome_of",
    "parse_strategy_option",
    "run_strategy",
    "score_by_agreement",
    "similarity",
]
