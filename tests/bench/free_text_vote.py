"""Free-text voting on real answers: the content-word vote next to the exact normal-form vote it replaced.

    python -m tests.bench.free_text_vote [--k 3] [--temperature 0.7] [--seed 1] [--max-tokens 48] [--show]

For each short factual question below (its known answer is a word, or one of a few accepted words), ``k``
answers are sampled from the local SmolLM2-135M (as ``k`` agents running it would give them: seeds ``seed`` to
``seed + k - 1``), and each rule picks one. A pick is right when it holds an accepted word. Rows:

- any answer right: the most a vote can get (some answer was right);
- the first answer: no vote at all;
- the exact vote (tests/support/votes.py): answers vote together only when their normal forms are equal,
  ties to the earliest (the rule before content words; with free text it nearly always picks the first answer);
- the content-word vote: :func:`accord.strategies.majority` with the question (spec/STRATEGIES.md, section 3).

Also: how often the content-word vote found agreement (a winner backed by two answers or more) and whether it
was right then. The model is tiny, so the absolute rates are low; what matters is the gap between the rows.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import anyio
from rich.console import Console
from rich.table import Table

from accord.backends import LlamaCppBackend, LlamaCppConfig
from accord.backends.base import CompletionRequest
from accord.protocol.messages import Tier
from accord.strategies import Ask, CallRecord, majority, normalise
from tests.support.votes import exact_vote

QUESTIONS: tuple[tuple[str, str], ...] = (  # the question, its answer (the accepted words, space-separated)
    ("What is the capital of Italy?", "rome"),
    ("What is the capital of France?", "paris"),
    ("What is the capital of Japan?", "tokyo"),
    ("What is the capital of Germany?", "berlin"),
    ("What is the capital of Spain?", "madrid"),
    ("What is the capital of the United Kingdom?", "london"),
    ("What is the capital of Russia?", "moscow"),
    ("What is the capital of Egypt?", "cairo"),
    ("What is the largest planet in the solar system?", "jupiter"),
    ("Which planet is known as the Red Planet?", "mars"),
    ("What is the closest star to the Earth?", "sun"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon"),
    ("What is the chemical symbol for gold?", "au"),
    ("What is frozen water called?", "ice"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("What is the longest river in Africa?", "nile"),
    ("Who wrote the play Romeo and Juliet?", "shakespeare"),
    ("Who painted the Mona Lisa?", "leonardo"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is the largest mammal on Earth?", "whale"),
    ("How many legs does a spider have?", "eight 8"),
    ("What color is the sky on a clear day?", "blue"),
    ("In which country are the pyramids of Giza?", "egypt"),
    ("What language is mainly spoken in Brazil?", "portuguese"),
)


@dataclass
class Tally:
    any_right: int = 0
    first: int = 0
    exact: int = 0
    content: int = 0
    agreed: int = 0
    agreed_right: int = 0


def _right(text: str, words: frozenset[str]) -> bool:
    return not words.isdisjoint(normalise(text).split())


@dataclass(frozen=True)
class Sampling:
    k: int
    temperature: float
    seed: int
    max_tokens: int


async def _answers(backend: LlamaCppBackend, question: str, how: Sampling) -> list[str]:
    messages = Ask(question).messages()
    out = []
    for seed in range(how.seed, how.seed + how.k):
        request = CompletionRequest(
            messages=messages, max_tokens=how.max_tokens, temperature=how.temperature, seed=seed, timeout_ms=60_000
        )
        out.append((await backend.complete(request)).text)
    return out


async def _run(how: Sampling, show: Console | None) -> Tally:
    tally = Tally()
    async with LlamaCppBackend(LlamaCppConfig()) as backend:
        for question, accepted in QUESTIONS:
            right_words = frozenset(accepted.split())
            answers = await _answers(backend, question, how)
            records = [
                CallRecord(role="answer", tiers=(Tier.DEVICE,), max_price_micros=0, agent_id=f"a{i}", answer=a)
                for i, a in enumerate(answers)
            ]
            vote = majority(records, "chat", question)
            assert vote is not None
            tally.any_right += any(_right(a, right_words) for a in answers)
            tally.first += _right(answers[0], right_words)
            exact = exact_vote(records, "chat")
            assert exact is not None
            tally.exact += _right(exact[0], right_words)
            tally.content += _right(vote.text, right_words)
            if len(vote.calls) >= 2:
                tally.agreed += 1
                tally.agreed_right += _right(vote.text, right_words)
            if show is not None:
                shown = " | ".join(" ".join(a.split())[:50] for a in answers)
                show.print(f"[dim]{question} -> {shown}[/dim]", highlight=False)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=3, help="answers per question (agents)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1, help="the first agent's sampling seed")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--show", action="store_true", help="print every question's answers")
    args = parser.parse_args()
    console = Console()
    started = time.perf_counter()
    how = Sampling(args.k, args.temperature, args.seed, args.max_tokens)
    tally = anyio.run(_run, how, console if args.show else None)
    n = len(QUESTIONS)
    title = (
        f"{n} questions, {how.k} SmolLM2-135M answers each, temperature {how.temperature}, seeds from {how.seed}"
    )
    table = Table(title=title)
    table.add_column("pick")
    table.add_column("right", justify="right")
    table.add_column("share", justify="right")
    for name, right in (
        ("any answer right (the ceiling)", tally.any_right),
        ("the first answer (no vote)", tally.first),
        ("exact normal-form vote (before)", tally.exact),
        ("content-word vote (now)", tally.content),
    ):
        table.add_row(name, str(right), f"{right / n:.0%}")
    console.print(table)
    console.print(
        f"the content-word vote found agreement (two answers or more behind the winner) on {tally.agreed} of {n} "
        f"questions and was right on {tally.agreed_right} of those; {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
