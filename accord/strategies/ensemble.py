"""Ensemble: k answers from k different agents, combined by majority vote on normalised answers or by a judge.

The k calls run side by side, each on a different agent (a shared ``avoid`` set) and each with an equal share of
the remaining budget. ``combine="judge"`` sends the question and the numbered answers to a judge task (by default
on the cloud tier) that names the best one; when the judge gives no usable verdict the vote decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final, Literal

from accord.protocol.messages import Tier
from accord.strategies.answers import majority
from accord.strategies.base import Answer, Ask, CallRecord, Session, answered
from accord.strategies.prompts import select_prompt

__all__ = ["Ensemble", "judge_select"]

_BEST: Final = re.compile(r"best\s*[:=]?\s*(?:response\s*)?#?(\d+)", re.IGNORECASE)


async def judge_select(
    ask: Ask, records: list[CallRecord], session: Session, tiers: tuple[Tier, ...]
) -> Answer | None:
    """The answer a judge task picks among ``records`` (None when it gives no usable verdict)."""
    texts = [r.answer or "" for r in records]
    judge_ask = replace(ask, prompt=select_prompt(ask.prompt, texts), notes=None, max_output_tokens=64)
    verdict = await session.call(judge_ask, role="judge", tiers=tiers)
    if verdict is None or verdict.answer is None:
        return None
    found = _BEST.findall(verdict.answer)
    if not found or not 1 <= int(found[-1]) <= len(records):
        return None
    chosen = records[int(found[-1]) - 1]
    assert chosen.answer is not None
    return Answer(text=chosen.answer, calls=(chosen, verdict))


@dataclass(frozen=True)
class Ensemble:
    k: int = 3
    tiers: tuple[Tier, ...] = ()
    combine: Literal["vote", "judge"] = "vote"
    judge_tiers: tuple[Tier, ...] = (Tier.CLOUD,)
    name: str = "ensemble"

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        records = answered(await session.call_many([ask] * self.k, role="answer", tiers=self.tiers))
        if not records:
            return None
        if self.combine == "judge" and len(records) > 1:
            chosen = await judge_select(ask, records, session, self.judge_tiers)
            if chosen is not None:
                return chosen
        return majority(records, ask.form, ask.prompt)
