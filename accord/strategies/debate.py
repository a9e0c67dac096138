"""Debate (Du et al., 2023): k seats answer, then for r-1 more rounds each seat sees the other seats' previous
answers and updates its own; the final answer is the majority vote of the seats' last answers.

Every round's k calls run side by side on different agents, and a seat's call avoids the agents that answered
for the other seats, so a seat never takes over another seat's agent (with exactly k agents, each seat keeps
its own). A seat whose call fails (its agent died and no other could take the task in time, or the budget ran
out) keeps its previous answer, so a debate survives losing an agent; a seat that never answered does not vote.
With ``stop_on_consensus`` the debate ends as soon as every seat's answer agrees with every other's (the vote's
notion of agreement: nothing left to argue, no money to spend).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from accord.protocol.messages import Tier
from accord.strategies.answers import agrees, majority
from accord.strategies.base import Answer, Ask, CallRecord, Session
from accord.strategies.prompts import debate_notes

__all__ = ["Debate"]


@dataclass(frozen=True)
class Debate:
    k: int = 3
    rounds: int = 2
    tiers: tuple[Tier, ...] = ()
    stop_on_consensus: bool = True
    name: str = "debate"

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        seats: list[CallRecord | None] = [None] * self.k
        for round_no in range(1, self.rounds + 1):
            if round_no == 1:
                asks = [ask] * self.k
            else:
                asks = []
                for i, own in enumerate(seats):
                    others = [s.answer or "" for j, s in enumerate(seats) if j != i and s is not None]
                    asks.append(ask.with_notes(debate_notes(own.answer if own else None, others)))
            keep = [s.agent_id if s is not None else None for s in seats]
            results = await session.call_many(asks, role=f"debate{round_no}", tiers=self.tiers, keep=keep)
            seats = [new if new is not None else old for new, old in zip(results, seats, strict=True)]
            voters = [s for s in seats if s is not None]
            if not voters:
                return None
            if session.exhausted is not None:
                break
            if self.stop_on_consensus and _unanimous(voters, ask):
                break
        return majority([s for s in seats if s is not None], ask.form, ask.prompt)


def _unanimous(voters: list[CallRecord], ask: Ask) -> bool:
    return all(agrees(a.answer or "", b.answer or "", ask.form, ask.prompt) for a, b in combinations(voters, 2))
