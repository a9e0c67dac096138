"""Outcome records from the RouteLLM evaluation sets (``routellm-evals``, Apache-2.0), one per query and model.

- ``mmlu``: 57 subject files, correctness of both models; ``category`` = the subject, ``kind`` = ``mcq``.
- ``gsm8k``: correctness plus both models' full answers (``response``); ``kind`` = ``math``.
- ``mt_bench``: a GPT-4 judge's 1-10 score per model and turn; one record per question and model with
  ``score`` = the mean over the two turns (what RouteLLM's evaluation averages), ``prompt`` = the first turn
  (RouteLLM routes on it), ``response`` = the first-turn answer as the judge quoted it; ``category`` = the
  MT-Bench category, ``kind`` = ``chat``.

Contaminated prompts (``*/contaminated_prompts.jsonl``) are dropped exactly as RouteLLM's ``benchmarks.py`` does
(exact match of ``eval_prompt``; for MT-Bench, a question goes when either turn matches). What remains matches
the data set README: MMLU 14,037 rows, GSM8K 1,307, MT-Bench 72 questions.

Costs are estimates, since the sets record no usage: tokens = ``ceil(chars / 4)`` (MMLU answers are one letter:
1 output token), priced with :data:`PRICES` (USD per million tokens, which is micro-USD per token): GPT-4-1106
at its list price of 10 in / 30 out, Mixtral-8x7B at 0.6 / 0.6 (a typical hosted price). Latency is not known
and left empty. The data directory comes from :func:`accord.bench.data.routellm_replay.routellm_evals_dir`
(``$ACCORD_DATASETS`` or ``../shared/datasets`` beside the repository).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from accord.bench.data.routellm_replay import STRONG_MODEL, WEAK_MODEL, routellm_evals_dir
from accord.protocol.pricing import estimate_tokens
from accord.routing.base import RouterError
from accord.routing.records import Outcome

__all__ = ["PRICES", "SETS", "STRONG_MODEL", "WEAK_MODEL", "RouteLLMSet", "load_routellm_outcomes"]

RouteLLMSet = Literal["mmlu", "gsm8k", "mt_bench"]
SETS: Final[tuple[RouteLLMSet, ...]] = ("mmlu", "gsm8k", "mt_bench")

PRICES: Final[dict[str, tuple[float, float]]] = {
    STRONG_MODEL: (10.0, 30.0),
    WEAK_MODEL: (0.6, 0.6),
}
"""Model -> (input, output) price in USD per million tokens (= micro-USD per token)."""


def _cost(model: str, input_tokens: int, output_tokens: int) -> int:
    price_in, price_out = PRICES.get(model, (0.0, 0.0))
    return math.ceil(input_tokens * price_in + output_tokens * price_out)


def _contaminated(set_dir: Path) -> set[str]:
    path = set_dir / "contaminated_prompts.jsonl"
    if not path.is_file():
        return set()
    with path.open(encoding="utf-8") as handle:
        return {str(json.loads(line)["eval_prompt"]) for line in handle if line.strip()}


def _bool(value: str, where: str) -> bool:
    text = value.strip()
    if text not in ("True", "False"):
        raise RouterError("bad_input", f"{where}: expected True/False, got {value!r}")
    return text == "True"


def _mmlu(evals: Path, drop: bool) -> Iterator[Outcome]:
    set_dir = evals / "mmlu"
    dropped = _contaminated(set_dir) if drop else set()
    for path in sorted((set_dir / "responses").glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        with path.open(newline="", encoding="utf-8") as handle:
            for row_no, row in enumerate(csv.DictReader(handle)):
                prompt = row["prompt"]
                if prompt in dropped:
                    continue
                tokens = estimate_tokens(prompt)
                for model in (WEAK_MODEL, STRONG_MODEL):
                    yield Outcome(
                        query_id=f"mmlu/{subject}/{row_no}",
                        prompt=prompt,
                        model=model,
                        kind="mcq",
                        category=subject,
                        correct=_bool(row[model], f"{path.name}:{row_no + 2}"),
                        cost_micros=_cost(model, tokens, 1),
                        input_tokens=tokens,
                        output_tokens=1,
                        source="mmlu",
                    )


def _gsm8k(evals: Path, drop: bool) -> Iterator[Outcome]:
    set_dir = evals / "gsm8k"
    dropped = _contaminated(set_dir) if drop else set()
    with (set_dir / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as handle:
        for row_no, row in enumerate(csv.DictReader(handle)):
            prompt = row["prompt"]
            if prompt in dropped:
                continue
            tokens = estimate_tokens(prompt)
            for model in (WEAK_MODEL, STRONG_MODEL):
                response = row[f"{model}_response"]
                out = estimate_tokens(response)
                yield Outcome(
                    query_id=f"gsm8k/{row_no}",
                    prompt=prompt,
                    model=model,
                    kind="math",
                    correct=_bool(row[model], f"gsm8k_responses.csv:{row_no + 2}"),
                    response=response,
                    cost_micros=_cost(model, tokens, out),
                    input_tokens=tokens,
                    output_tokens=out,
                    source="gsm8k",
                )


_ANSWER_START: Final = "[The Start of Assistant's Answer]\n"
_ANSWER_END: Final = "\n[The End of Assistant's Answer]"
_TURN: Final = "### Assistant A:\n"
_CONVERSATION_END: Final = "<|The End of Assistant A's Conversation with User|>"


def _judged_answer(judge_prompt: str, turn: int) -> str:
    """The answer the judge saw for this turn ('' when the judge prompt's layout is not recognised)."""
    if turn == 1:
        start, end = judge_prompt.find(_ANSWER_START), judge_prompt.find(_ANSWER_END)
        return judge_prompt[start + len(_ANSWER_START) : end].strip() if 0 <= start < end else ""
    end = judge_prompt.rfind(_CONVERSATION_END)
    start = judge_prompt.rfind(_TURN, 0, end)
    return judge_prompt[start + len(_TURN) : end].strip() if 0 <= start < end else ""


def _mt_bench(evals: Path, drop: bool) -> Iterator[Outcome]:
    set_dir = evals / "mt_bench"
    dropped = _contaminated(set_dir) if drop else set()
    questions: dict[int, tuple[str, list[str]]] = {}
    with (set_dir / "question.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                questions[int(item["question_id"])] = (str(item["category"]), [str(t) for t in item["turns"]])
    judged: dict[tuple[int, str], dict[int, tuple[float, str]]] = {}
    with (set_dir / "judgements.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                turn = int(item["turn"])
                answer = _judged_answer(str(item["user_prompt"]), turn)
                key = (int(item["question_id"]), str(item["model"]))
                judged.setdefault(key, {})[turn] = (float(item["score"]), answer)
    for qid in sorted(questions):
        category, turns = questions[qid]
        if drop and any(turn in dropped for turn in turns):
            continue
        for model in (WEAK_MODEL, STRONG_MODEL):
            per_turn = judged.get((qid, model), {})
            if len(per_turn) != len(turns):
                raise RouterError("bad_input", f"mt_bench question {qid}: {model} judged on {len(per_turn)} turns")
            scores = [per_turn[t][0] for t in sorted(per_turn)]
            answers = [per_turn[t][1] for t in sorted(per_turn)]
            # turn i sees the earlier turns and answers again
            input_tokens = sum(
                estimate_tokens("".join(turns[: i + 1]) + "".join(answers[:i])) for i in range(len(turns))
            )
            output_tokens = sum(estimate_tokens(a) for a in answers)
            yield Outcome(
                query_id=f"mt_bench/{qid}",
                prompt=turns[0],
                model=model,
                kind="chat",
                category=category,
                score=sum(scores) / len(scores),
                score_max=10.0,
                response=answers[0],
                cost_micros=_cost(model, input_tokens, output_tokens),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                source="mt_bench",
            )


def load_routellm_outcomes(
    name: str, datasets_dir: str | Path | None = None, *, drop_contaminated: bool = True
) -> list[Outcome]:
    """The outcome records of one RouteLLM set (``mmlu``, ``gsm8k`` or ``mt_bench``), weak then strong per query.

    Raises ``FileNotFoundError`` naming the path tried when the data are missing.
    """
    evals = routellm_evals_dir(datasets_dir)
    if name == "mmlu":
        return list(_mmlu(evals, drop_contaminated))
    if name == "gsm8k":
        return list(_gsm8k(evals, drop_contaminated))
    if name == "mt_bench":
        return list(_mt_bench(evals, drop_contaminated))
    raise RouterError("bad_input", f"unknown RouteLLM set {name!r}; choose from {', '.join(SETS)}")
