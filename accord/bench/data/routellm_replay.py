"""Outcome logs from the RouteLLM evaluation sets (``../shared/datasets/routellm-evals``, Apache-2.0).

Two real models answered every query: a weak one (:data:`WEAK_MODEL`) and a strong one (:data:`STRONG_MODEL`).

- GSM8K (``gsm8k/gsm8k_responses.csv``): full response texts and correctness for both models.
- MMLU (``mmlu/responses/mmlu_<subject>.csv``): correctness only. Replay answers these with
  :data:`~accord.backends.replay.NO_TEXT_MARKER` and the recorded correctness in ``metadata``/``quality``.
- MT-Bench (``mt_bench/judgements.jsonl`` + ``question.jsonl``): a GPT-4 judge's score (1-10) per model and turn,
  so ``quality = score / 10``. The answer texts are taken from the judge's prompt, which quotes them; turn 2 is
  keyed by the second question (the request's last user message).

Contaminated prompts (``*/contaminated_prompts.jsonl``: they leaked into router training data) are dropped by
default, as the dataset README asks: GSM8K keeps 1,307 of 1,319 prompts, MMLU 14,037 of 14,042 rows (13,932
distinct prompts: 105 questions appear twice; the log keeps every row and a lookup answers with the first),
MT-Bench 72 of 80 questions. Token counts are not recorded, so replay estimates them (chars/4) and says so.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from accord.backends.base import normalize_prompt
from accord.backends.replay import OutcomeLog, OutcomeRecord

__all__ = [
    "DATASETS_ENV",
    "ROUTELLM_SETS",
    "STRONG_MODEL",
    "WEAK_MODEL",
    "contaminated_prompts",
    "default_datasets_dir",
    "load_gsm8k",
    "load_mmlu",
    "load_mt_bench",
    "load_routellm",
    "routellm_evals_dir",
]

WEAK_MODEL: Final = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL: Final = "gpt-4-1106-preview"
ROUTELLM_SETS: Final = ("gsm8k", "mmlu", "mt_bench")
DATASETS_ENV: Final = "ACCORD_DATASETS"
"""Environment variable naming the datasets directory (the one holding ``routellm-evals/``)."""

_ANSWER_START: Final = "[The Start of Assistant's Answer]\n"
_ANSWER_END: Final = "\n[The End of Assistant's Answer]"
_TURN_MARK: Final = "### Assistant A:\n"
_CONVERSATION_END: Final = "<|The End of Assistant A's Conversation with User|>"


def default_datasets_dir() -> Path:
    """``$ACCORD_DATASETS``, else ``../shared/datasets`` next to the repository root (the directory holding
    ``pyproject.toml``, searched upward from the working directory and from this file)."""
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for directory in (start, *start.parents):
            if (directory / "pyproject.toml").is_file():
                candidate = directory.parent / "shared" / "datasets"
                if candidate.is_dir():
                    return candidate
    return Path.cwd().parent / "shared" / "datasets"


def routellm_evals_dir(datasets_dir: str | Path | None = None) -> Path:
    """``<datasets>/routellm-evals/routellm/evals``; raises ``FileNotFoundError`` with the path it tried."""
    base = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir()
    evals = base / "routellm-evals" / "routellm" / "evals"
    if not evals.is_dir():
        raise FileNotFoundError(
            f"RouteLLM evaluation data not found at {evals}; pass the datasets directory or set ${DATASETS_ENV}"
        )
    return evals


def contaminated_prompts(set_dir: Path) -> set[str]:
    """The whitespace-normalised ``eval_prompt`` of every line of ``set_dir/contaminated_prompts.jsonl``."""
    path = set_dir / "contaminated_prompts.jsonl"
    if not path.is_file():
        return set()
    prompts = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                prompts.add(normalize_prompt(str(json.loads(line)["eval_prompt"])))
    return prompts


def _correct(value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise ValueError(f"expected True/False, got {value!r}")
    return text == "true"


def _keep(prompt: str, dropped: set[str]) -> bool:
    return normalize_prompt(prompt) not in dropped


def load_gsm8k(datasets_dir: str | Path | None = None, *, drop_contaminated: bool = True) -> OutcomeLog:
    """GSM8K: both models' response texts and correctness (source ``gsm8k``)."""
    set_dir = routellm_evals_dir(datasets_dir) / "gsm8k"
    dropped = contaminated_prompts(set_dir) if drop_contaminated else set()
    log = OutcomeLog()
    with (set_dir / "gsm8k_responses.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not _keep(row["prompt"], dropped):
                continue
            for model in (WEAK_MODEL, STRONG_MODEL):
                log.add(
                    OutcomeRecord(
                        prompt=row["prompt"],
                        model=model,
                        response=row[f"{model}_response"],
                        correct=_correct(row[model]),
                        source="gsm8k",
                    )
                )
    return log


def load_mmlu(
    datasets_dir: str | Path | None = None,
    *,
    drop_contaminated: bool = True,
    subjects: Sequence[str] | None = None,
) -> OutcomeLog:
    """MMLU: correctness only (no response text), source ``mmlu/<subject>``; ``subjects`` limits the files."""
    set_dir = routellm_evals_dir(datasets_dir) / "mmlu"
    dropped = contaminated_prompts(set_dir) if drop_contaminated else set()
    log = OutcomeLog()
    for path in sorted((set_dir / "responses").glob("mmlu_*.csv")):
        subject = path.stem.removeprefix("mmlu_")
        if subjects is not None and subject not in subjects:
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if not _keep(row["prompt"], dropped):
                    continue
                for model in (WEAK_MODEL, STRONG_MODEL):
                    log.add(
                        OutcomeRecord(
                            prompt=row["prompt"],
                            model=model,
                            correct=_correct(row[model]),
                            source=f"mmlu/{subject}",
                        )
                    )
    return log


def _answer_from_judge_prompt(user_prompt: str, turn: int) -> str | None:
    """The assistant's answer as quoted in the judge's prompt (None when the format is not recognised)."""
    if turn == 1:
        start = user_prompt.find(_ANSWER_START)
        end = user_prompt.find(_ANSWER_END, start + 1)
        if start < 0 or end < 0:
            return None
        return user_prompt[start + len(_ANSWER_START) : end].strip()
    end = user_prompt.rfind(_CONVERSATION_END)
    start = user_prompt.rfind(_TURN_MARK, 0, end if end >= 0 else None)
    if start < 0 or end < 0:
        return None
    return user_prompt[start + len(_TURN_MARK) : end].strip()


def load_mt_bench(datasets_dir: str | Path | None = None, *, drop_contaminated: bool = True) -> OutcomeLog:
    """MT-Bench: judge scores (1-10) per model and turn, answer texts from the judge prompts (source
    ``mt_bench/<category>``, ``metadata``: ``question_id``, ``turn``)."""
    set_dir = routellm_evals_dir(datasets_dir) / "mt_bench"
    dropped = contaminated_prompts(set_dir) if drop_contaminated else set()
    questions: dict[int, tuple[str, list[str]]] = {}
    with (set_dir / "question.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                questions[int(item["question_id"])] = (str(item["category"]), [str(t) for t in item["turns"]])
    log = OutcomeLog()
    with (set_dir / "judgements.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            item = json.loads(line)
            qid, turn = int(item["question_id"]), int(item["turn"])
            category, turns = questions[qid]
            if not _keep(turns[0], dropped) or turn > len(turns):
                continue
            score = float(item["score"])
            log.add(
                OutcomeRecord(
                    prompt=turns[turn - 1],
                    model=str(item["model"]),
                    response=_answer_from_judge_prompt(str(item["user_prompt"]), turn),
                    score=score if score >= 0 else None,  # FastChat writes -1 when the judge gave no rating
                    score_max=10.0,
                    source=f"mt_bench/{category}",
                    metadata={"question_id": qid, "turn": turn},
                )
            )
    return log


def load_routellm(
    datasets_dir: str | Path | None = None,
    *,
    sets: Iterable[str] = ROUTELLM_SETS,
    drop_contaminated: bool = True,
) -> OutcomeLog:
    """One log with the chosen sets (default all three)."""
    loaders = {"gsm8k": load_gsm8k, "mmlu": load_mmlu, "mt_bench": load_mt_bench}
    log = OutcomeLog()
    for name in sets:
        if name not in loaders:
            raise ValueError(f"unknown RouteLLM set {name!r}; choose from {', '.join(ROUTELLM_SETS)}")
        for record in loaders[name](datasets_dir, drop_contaminated=drop_contaminated):
            log.add(record)
    return log
