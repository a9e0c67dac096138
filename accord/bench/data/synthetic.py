"""A generated outcome log with known structure, for tests, examples and smoke runs (no data set needed).

Queries fall into three categories (``easy``, ``mid``, ``hard``) and may contain a marker word (``integral``)
that makes the weak model fail more often; the strong model is better everywhere. The weak model's answer ends
with ``#### <number>`` more often when it is right, so a cascade can learn to read it. Costs: weak 10, strong
200 micro-USD per query. Everything is drawn from one seeded ``random.Random``.
"""

from __future__ import annotations

import random
from typing import Final

from accord.routing.records import Outcome

__all__ = ["STRONG", "WEAK", "synthetic_outcomes"]

WEAK: Final = "small-model"
STRONG: Final = "large-model"

_FILLER: Final = (
    "apple", "river", "stone", "cloud", "paper", "market", "garden", "window", "number", "table", "light",
    "music", "field", "road", "winter", "teacher", "planet", "engine", "signal", "forest", "letter", "bridge",
)  # fmt: skip
_P_WEAK: Final = {"easy": 0.9, "mid": 0.6, "hard": 0.35}
_P_STRONG: Final = {"easy": 0.95, "mid": 0.85, "hard": 0.75}


def synthetic_outcomes(n: int, *, seed: int = 0, marker_rate: float = 0.3) -> list[Outcome]:
    """``2 * n`` records: ``n`` queries, each answered by :data:`WEAK` and :data:`STRONG`."""
    rng = random.Random(seed)
    records: list[Outcome] = []
    for i in range(n):
        category = rng.choice(("easy", "mid", "hard"))
        words = [rng.choice(_FILLER) for _ in range(rng.randint(5, 15))]
        marker = rng.random() < marker_rate
        if marker:
            words.insert(rng.randrange(len(words) + 1), "integral")
        prompt = " ".join(words) + f" ({i})?"
        p_weak = _P_WEAK[category] - (0.3 if marker else 0.0)
        weak_ok = rng.random() < p_weak
        strong_ok = rng.random() < _P_STRONG[category]
        value = rng.randint(1, 999)
        final = rng.random() < (0.9 if weak_ok else 0.3)
        answer = f"We compute {value} step by step." + (f"\n#### {value}" if final else " It is unclear.")
        for model, ok, response, cost in ((WEAK, weak_ok, answer, 10), (STRONG, strong_ok, f"#### {value}", 200)):
            records.append(
                Outcome(
                    query_id=f"q{i}",
                    prompt=prompt,
                    model=model,
                    category=category,
                    correct=ok,
                    response=response,
                    cost_micros=cost,
                    source="synthetic",
                )
            )
    return records
