"""Generated outcome logs of any number of models with known ground truth (N-model development data).

A :class:`SyntheticWorld` is the ground truth, drawn once from ``world_seed``: topics (each with its own words),
tasks (``kind`` = ``mcq``, ``math``, ``chat``, of different difficulty) and models. Each model has

- a general ability, loosely tied to its price (dearer models are better on average, not always);
- a skill per topic (some models are specialists: much better on one or two topics) and per task;
- a sensitivity to the query's difficulty;
- a price sheet (micro-USD per 1,000 input / output tokens) spread log-uniformly over ``price_spread`` (100x
  by default, and more between the extremes of input and output prices) and a verbosity (output length).

A query has a task, a topic and a latent difficulty ``d ~ N(0, 1)``. Its text shows the task (a template), the
topic (several of the topic's words among filler) and, only partly, the difficulty (hard and easy marker words
drawn with probabilities that depend on ``d``, and length). The probability that model ``m`` answers well is

    P = sigmoid(task_offset[task] + ability[m] + topic_skill[m, topic] + task_skill[m, task] - slope[m] * d)

and the outcome is one Bernoulli draw of it; cost = the price sheet applied to the query's input tokens and the
model's output tokens (task length x verbosity x noise). :meth:`SyntheticWorld.sample` draws queries from its own
``seed``, so two seeds of one world are a train and a test set from the same distribution that share no query
(query ids carry the seed). :meth:`SyntheticWorld.probabilities` gives the true P of every (query, model), from
which the Bayes-optimal router's curve is computed for reference.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from accord.routing.base import FloatArray, RouterError
from accord.routing.records import Outcome

__all__ = ["TASKS", "SyntheticModel", "SyntheticQuery", "SyntheticWorld", "synthetic_world"]

TASKS: Final[dict[str, tuple[float, int, str]]] = {
    "mcq": (1.0, 4, "Question: {body}? Choose one of A, B, C or D."),
    "math": (-0.3, 160, "Solve step by step: {body}. Give the final number."),
    "chat": (0.4, 320, "Write a helpful answer: {body}."),
}
"""Task -> (offset of the logit: higher is easier, mean output tokens, prompt template)."""

_TOPICS: Final[dict[str, tuple[str, ...]]] = {
    "law": ("contract", "court", "statute", "plaintiff", "tort", "appeal", "liability", "clause", "verdict"),
    "medicine": ("patient", "dose", "symptom", "diagnosis", "clinical", "tumor", "cardiac", "therapy", "vaccine"),
    "physics": ("velocity", "quantum", "photon", "momentum", "entropy", "friction", "orbit", "voltage", "mass"),
    "history": ("empire", "treaty", "dynasty", "revolution", "medieval", "colonial", "monarch", "war", "senate"),
    "code": ("function", "python", "compiler", "array", "pointer", "recursion", "thread", "bug", "runtime"),
    "finance": ("interest", "equity", "bond", "dividend", "inflation", "portfolio", "loan", "tax", "margin"),
    "biology": ("protein", "enzyme", "cell", "gene", "species", "membrane", "neuron", "mitosis", "bacteria"),
    "poetry": ("rhyme", "sonnet", "metaphor", "stanza", "verse", "imagery", "meter", "elegy", "haiku"),
    "chemistry": ("molecule", "acid", "bond", "reaction", "catalyst", "isotope", "oxidation", "solvent", "ion"),
    "geography": ("river", "mountain", "climate", "continent", "desert", "border", "capital", "delta", "plateau"),
    "ethics": ("moral", "duty", "virtue", "consent", "utility", "justice", "harm", "fairness", "rights"),
    "music": ("chord", "melody", "tempo", "harmony", "scale", "rhythm", "octave", "symphony", "tuning"),
}
_FILLER: Final = (
    "the", "a", "of", "which", "what", "is", "how", "does", "this", "that", "when", "given", "following", "most",
    "best", "likely", "explain", "describe", "consider", "case", "example", "about", "in", "for", "with", "and",
)  # fmt: skip
_HARD: Final = ("prove", "derive", "rigorous", "subtle", "exception", "edge", "multi-step", "nested", "obscure")
_EASY: Final = ("simple", "basic", "define", "name", "common", "short", "list", "recall", "familiar")
_NAMES: Final = (
    "ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay", "kiwi", "lynx", "mole", "newt",
    "orca", "puma", "quail", "rook", "seal", "toad", "urial", "vole", "wasp", "yak", "zebu",
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticModel:
    name: str
    ability: float
    topic_skill: tuple[float, ...]
    task_skill: tuple[float, ...]
    slope: float
    price_in_per_1k_micros: int
    price_out_per_1k_micros: int
    verbosity: float


@dataclass(frozen=True)
class SyntheticQuery:
    query_id: str
    prompt: str
    task: int
    topic: int
    difficulty: float
    input_tokens: int


@dataclass(frozen=True)
class SyntheticWorld:
    """The ground truth (see the module docstring)."""

    seed: int
    topics: tuple[str, ...]
    tasks: tuple[str, ...]
    models: tuple[SyntheticModel, ...]
    categories: bool = False
    """Whether records carry the topic as ``category`` (else it shows only in the words)."""

    @property
    def model_names(self) -> list[str]:
        return [m.name for m in self.models]

    def prices(self) -> dict[str, tuple[int, int]]:
        """Model -> (input, output) price in micro-USD per 1,000 tokens."""
        return {m.name: (m.price_in_per_1k_micros, m.price_out_per_1k_micros) for m in self.models}

    def sample(self, n: int, *, seed: int) -> list[SyntheticQuery]:
        """``n`` queries drawn with ``seed`` (ids ``s<seed>-<i>``)."""
        rng = random.Random(f"queries/{self.seed}/{seed}")
        out: list[SyntheticQuery] = []
        for i in range(n):
            task = rng.randrange(len(self.tasks))
            topic = rng.randrange(len(self.topics))
            difficulty = rng.gauss(0.0, 1.0)
            words = [rng.choice(_FILLER) for _ in range(rng.randint(4, 9) + max(0, round(2 * difficulty)))]
            vocabulary = _TOPICS[self.topics[topic]]
            words += [rng.choice(vocabulary) for _ in range(rng.randint(1, 3))]
            words += [rng.choice(_HARD) for _ in range(_poisson(rng, 0.9 * math.exp(0.8 * difficulty)))]
            words += [rng.choice(_EASY) for _ in range(_poisson(rng, 0.9 * math.exp(-0.8 * difficulty)))]
            words += [rng.choice(list(_TOPICS[rng.choice(self.topics)])) for _ in range(rng.randint(0, 1))]
            rng.shuffle(words)
            body = " ".join(words) + f" #{seed}.{i}"
            prompt = TASKS[self.tasks[task]][2].format(body=body)
            out.append(
                SyntheticQuery(
                    query_id=f"s{seed}-{i}",
                    prompt=prompt,
                    task=task,
                    topic=topic,
                    difficulty=difficulty,
                    input_tokens=max(1, math.ceil(len(prompt) / 4)),
                )
            )
        return out

    def probabilities(self, queries: Sequence[SyntheticQuery]) -> FloatArray:
        """The true P(good answer) of every (query, model): ``(len(queries), len(models))``."""
        out = np.zeros((len(queries), len(self.models)))
        for i, q in enumerate(queries):
            base = TASKS[self.tasks[q.task]][0]
            for j, m in enumerate(self.models):
                z = base + m.ability + m.topic_skill[q.topic] + m.task_skill[q.task] - m.slope * q.difficulty
                out[i, j] = 1.0 / (1.0 + math.exp(-z))
        return out

    def outcomes(self, n: int, *, seed: int) -> list[Outcome]:
        """One record per (query, model) of ``n`` queries drawn with ``seed`` (outcomes drawn with it too)."""
        queries = self.sample(n, seed=seed)
        p = self.probabilities(queries)
        rng = random.Random(f"outcomes/{self.seed}/{seed}")
        records: list[Outcome] = []
        for i, q in enumerate(queries):
            task = self.tasks[q.task]
            for j, m in enumerate(self.models):
                correct = rng.random() < float(p[i, j])
                tokens = max(1, round(TASKS[task][1] * m.verbosity * math.exp(rng.gauss(0.0, 0.3))))
                cost = -(-q.input_tokens * m.price_in_per_1k_micros // 1000) - (
                    -tokens * m.price_out_per_1k_micros // 1000
                )
                records.append(
                    Outcome(
                        query_id=q.query_id,
                        prompt=q.prompt,
                        model=m.name,
                        kind=task,
                        category=self.topics[q.topic] if self.categories else None,
                        correct=correct,
                        response=f"{m.name} answers {'well' if correct else 'badly'}",
                        cost_micros=cost,
                        input_tokens=q.input_tokens,
                        output_tokens=tokens,
                        source="synthetic-models",
                    )
                )
        return records


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; the means here are small)."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def synthetic_world(
    models: int = 10,
    *,
    seed: int = 0,
    topics: int = 8,
    price_spread: float = 100.0,
    specialists: float = 0.4,
    skill_spread: float = 1.0,
    categories: bool = False,
) -> SyntheticWorld:
    """A world of ``models`` models over ``topics`` topics and the three :data:`TASKS`, drawn from ``seed``.

    ``specialists``: the share of models that are much better (+1.5 logits) on one or two topics;
    ``skill_spread`` scales every topic and task skill (0: models differ only in ability and price, and no router
    can beat the best single model at a given cost except by the query's difficulty).
    """
    if not 2 <= models <= len(_NAMES):
        raise RouterError("bad_input", f"between 2 and {len(_NAMES)} models")
    if not 1 <= topics <= len(_TOPICS):
        raise RouterError("bad_input", f"between 1 and {len(_TOPICS)} topics")
    rng = random.Random(f"world/{seed}")
    topic_names = tuple(sorted(_TOPICS)[:topics])
    task_names = tuple(TASKS)
    log_prices = sorted(rng.uniform(0.0, math.log(price_spread)) for _ in range(models))
    log_prices[0], log_prices[-1] = 0.0, math.log(price_spread)  # the full spread, cheapest to dearest
    built: list[SyntheticModel] = []
    for i, log_price in enumerate(log_prices):
        rank = log_price / math.log(price_spread)  # 0 (cheapest) .. 1 (dearest)
        skills = [skill_spread * rng.gauss(0.0, 0.6) for _ in topic_names]
        if rng.random() < specialists:
            for t in rng.sample(range(len(topic_names)), k=min(len(topic_names), rng.randint(1, 2))):
                skills[t] += 1.5 * skill_spread
        price_out = round(200 * math.exp(log_price))
        built.append(
            SyntheticModel(
                name=f"{_NAMES[i]}-{'small' if rank < 0.34 else 'medium' if rank < 0.67 else 'large'}",
                ability=-0.6 + 1.6 * rank + rng.gauss(0.0, 0.45),
                topic_skill=tuple(skills),
                task_skill=tuple(skill_spread * rng.gauss(0.0, 0.4) for _ in task_names),
                slope=rng.uniform(0.8, 1.6) - 0.3 * rank,
                price_in_per_1k_micros=max(1, round(price_out / rng.uniform(2.0, 5.0))),
                price_out_per_1k_micros=price_out,
                verbosity=math.exp(rng.gauss(0.0, 0.3)),
            )
        )
    return SyntheticWorld(
        seed=seed, topics=topic_names, tasks=task_names, models=tuple(built), categories=categories
    )
