"""Split (local-remote, after Minions, Narayan et al. 2025): the private context stays on local tiers.

The Ask's ``context`` is cut into chunks; local agents (device and edge tiers, certified for the Ask's privacy
class) extract from each chunk the facts the question needs. Only those extracts and the question go on: to the
remote tiers, as a task that declares the same residency and privacy class (so only agents certified for both
can take it), or, with ``local_only`` or a ``restricted`` Ask, to a local agent again. The raw context is never
part of a remote task. When the remote call gets no answer a local agent answers from the extracts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from accord.protocol.messages import Privacy, Tier
from accord.strategies.base import Answer, Ask, Session, StrategyConfigError, answered, as_answer
from accord.strategies.prompts import extract_ask, split_notes
from accord.strategies.route import Single

__all__ = ["Split", "chunk_text"]


def chunk_text(text: str, size: int) -> list[str]:
    """``text`` in pieces of at most ``size`` characters, cut at paragraph or line ends where possible."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > size:
        cut = max(rest.rfind("\n\n", 0, size), rest.rfind("\n", 0, size), rest.rfind(". ", 0, size))
        cut = cut + 1 if cut > size // 4 else size
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


@dataclass(frozen=True)
class Split:
    local_tiers: tuple[Tier, ...] = (Tier.DEVICE, Tier.EDGE)
    remote_tiers: tuple[Tier, ...] = (Tier.CLOUD,)
    chunk_chars: int = 2000
    max_chunks: int = 8
    local_only: bool = False
    name: str = "split"

    async def run(self, ask: Ask, session: Session) -> Answer | None:
        if not ask.context:
            return await Single(self.remote_tiers if not self.local_only else self.local_tiers).run(ask, session)
        chunks = chunk_text(ask.context, self.chunk_chars)
        if len(chunks) > self.max_chunks:  # never drop part of the context silently
            raise StrategyConfigError(
                f"split: the context is {len(ask.context)} characters, {len(chunks)} chunks of at most "
                f"{self.chunk_chars}; the strategy reads at most max_chunks={self.max_chunks} (raise chunk_chars "
                "or max_chunks, up to 16: e.g. --strategy split:chunk_chars=20000,max_chunks=16)"
            )
        asks = [replace(ask, prompt=extract_ask(ask.prompt, c), context=None, notes=None) for c in chunks]
        extracts = answered(await session.call_many(asks, role="extract", tiers=self.local_tiers, distinct=False))
        if not extracts:
            return None
        final_ask = replace(ask, context=None).with_notes(split_notes([r.answer or "" for r in extracts]))
        stay = self.local_only or ask.privacy is Privacy.RESTRICTED
        if not stay:
            remote = await session.call(final_ask, role="remote", tiers=self.remote_tiers)
            if remote is not None:
                return as_answer(remote)
        local = await session.call(final_ask, role="answer", tiers=self.local_tiers)
        return as_answer(local) if local is not None else None
