"""Cascade: a cheaper stage answers first; a verifier decides whether to escalate, and the next stage sees the
first answer as a draft (FrugalGPT, Chen et al. 2023; AutoMix, Madaan et al. 2023).

Both stages are strategies, so a device cascade can escalate to a cloud ensemble. Verifiers:

- :class:`SelfConfidence`: the first stage is asked to end with ``Confidence: N/10``; below the threshold (or
  no such line) escalates. Cheap, and as good as the model's calibration.
- :class:`JudgeVerifier`: another task (a judge agent, by default on the cloud tier) scores the answer 0-10.
- :class:`ScorerVerifier`: a learned scorer of (question, answer), a cascade router from
  :mod:`accord.routing` (``score`` = predicted benefit of the strong model given the draft).

If the first stage gets no answer the cascade escalates at once; if the escalation gets none (budget or time
ran out, no agent) the first answer stands and the run reports that it stopped early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from accord.protocol.messages import Tier
from accord.routing.base import Query
from accord.strategies.base import Answer, Ask, Session, Strategy
from accord.strategies.prompts import CONFIDENCE_INSTRUCTION, draft_notes, judge_prompt
from accord.strategies.route import Scorer, Single

__all__ = [
    "Cascade",
    "JudgeVerifier",
    "ScorerVerifier",
    "SelfConfidence",
    "Verdict",
    "Verifier",
    "parse_confidence",
    "strip_confidence",
]

_CONFIDENCE: Final = re.compile(r"confidence\s*[:=]\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+)|(%))?", re.IGNORECASE)
_SCORE: Final = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Verdict:
    escalate: bool
    confidence: float | None
    """The verifier's belief that the first answer is right (0..1), when it has one."""


class Verifier(Protocol):
    @property
    def name(self) -> str: ...

    def prepare(self, ask: Ask) -> Ask:
        """The Ask the first stage gets (a verifier may add an instruction)."""
        ...

    async def judge(self, ask: Ask, answer: Answer, session: Session) -> Verdict: ...


def parse_confidence(text: str) -> float | None:
    """``Confidence: 7/10`` -> 0.7 (the last such line; without a scale, values above 1 are read as x/10)."""
    found = _CONFIDENCE.findall(text)
    if not found:
        return None
    value, scale, percent = found[-1]
    v = float(value) / (float(scale) if scale else 100.0 if percent else (10.0 if float(value) > 1 else 1.0))
    return min(1.0, max(0.0, v))


def strip_confidence(text: str) -> str:
    lines = text.rstrip().splitlines()
    if lines and _CONFIDENCE.search(lines[-1]):
        lines = lines[:-1]
    return "\n".join(lines).rstrip() or text


@dataclass(frozen=True)
class SelfConfidence:
    threshold: float = 0.7
    name: str = "confidence"

    def prepare(self, ask: Ask) -> Ask:
        return replace(ask, system=f"{ask.system}\n\n{CONFIDENCE_INSTRUCTION}")

    async def judge(self, ask: Ask, answer: Answer, session: Session) -> Verdict:
        confidence = parse_confidence(answer.text)
        return Verdict(confidence is None or confidence < self.threshold, confidence)


@dataclass(frozen=True)
class JudgeVerifier:
    tiers: tuple[Tier, ...] = (Tier.CLOUD,)
    threshold: float = 0.7
    name: str = "judge"

    def prepare(self, ask: Ask) -> Ask:
        return ask

    async def judge(self, ask: Ask, answer: Answer, session: Session) -> Verdict:
        judge_ask = replace(ask, prompt=judge_prompt(ask.prompt, answer.text), notes=None, max_output_tokens=64)
        record = await session.call(judge_ask, role="verify", tiers=self.tiers)
        if record is None or record.answer is None:
            return Verdict(True, None)  # no verdict: escalate (the judge's silence proves nothing)
        found = _SCORE.findall(record.answer)
        if not found:
            return Verdict(True, None)
        confidence = min(1.0, float(found[-1]) / 10.0)
        return Verdict(confidence < self.threshold, confidence)


@dataclass(frozen=True)
class ScorerVerifier:
    router: Scorer
    threshold: float = 0.5
    """Escalate when the router's score (predicted benefit of the strong model given the draft) reaches it."""
    name: str = "scorer"

    def prepare(self, ask: Ask) -> Ask:
        return ask

    async def judge(self, ask: Ask, answer: Answer, session: Session) -> Verdict:
        score = self.router.score(Query(text=ask.prompt, kind=ask.form, category=ask.category, answer=answer.text))
        return Verdict(score >= self.threshold, max(0.0, min(1.0, 1.0 - score)))


@dataclass(frozen=True)
class Cascade:
    first: Strategy = field(default_factory=lambda: Single((Tier.DEVICE, Tier.EDGE)))
    then: Strategy = field(default_factory=lambda: Single((Tier.CLOUD,)))
    verifier: Verifier = field(default_factory=SelfConfidence)
    with_draft: bool = True
    """Give the escalation the first answer as a draft to check (else it answers afresh)."""
    name: str = "cascade"

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        with session.stage("draft"):
            draft = await self.first.run(self.verifier.prepare(ask), session)
        if draft is not None:
            verdict = await self.verifier.judge(ask, draft, session)  # SelfConfidence reads the line stripped here
            if isinstance(self.verifier, SelfConfidence):
                draft = replace(draft, text=strip_confidence(draft.text))
            if not verdict.escalate:
                return replace(draft, confidence=verdict.confidence)
        escalation = ask.with_notes(draft_notes(draft.text)) if draft is not None and self.with_draft else ask
        with session.stage("escalate"):
            final = await self.then.run(escalation, session)
        return final if final is not None else draft
