"""The RouteLLM evaluation sets (``routellm-evals``, Apache-2.0): one reader per set, two views of what it read.

Two real models answered every query: a weak one (:data:`WEAK_MODEL`) and a strong one (:data:`STRONG_MODEL`).

- ``mmlu`` (``mmlu/responses/mmlu_<subject>.csv``, 57 subjects): correctness of both models, no answer text.
- ``gsm8k`` (``gsm8k/gsm8k_responses.csv``): correctness plus both models' full answers.
- ``mt_bench`` (``mt_bench/question.jsonl`` + ``judgements.jsonl``): two-turn questions and a GPT-4 judge's
  1-10 score per model and turn (FastChat's -1, "no rating", is read as no score). The answer texts are taken
  from the judge's prompt, which quotes them.

:func:`read_routellm` reads one set's files into :class:`RouteLLMRows` (its queries and every recorded answer,
per model and turn); the two views are built from that:

- :meth:`RouteLLMRows.outcomes` (:func:`load_routellm_outcomes`): one :class:`~accord.routing.records.Outcome`
  per query and model, what routers learn from. ``kind`` is ``mcq`` / ``math`` / ``chat``, ``category`` the
  MMLU subject or MT-Bench category, ``source`` the set name. MT-Bench records carry ``score`` = the mean over
  the turns (what RouteLLM's evaluation averages), ``prompt`` = the first turn (RouteLLM routes on it),
  ``response`` = the first-turn answer. Costs are estimates, since the sets record no usage: tokens =
  ``ceil(chars / 4)`` (each MT-Bench turn sees the earlier turns and answers again; an MMLU answer is one letter:
  1 output token), priced with :data:`PRICES` (USD per million tokens, which is micro-USD per token):
  GPT-4-1106 at its list price of 10 in / 30 out, Mixtral-8x7B at 0.6 / 0.6 (a typical hosted price). Latency
  is not known and left empty.
- :meth:`RouteLLMRows.replay_log` (:func:`load_routellm_log`): one record per query, model and turn, in file
  order, in the :class:`~accord.backends.replay.OutcomeLog` the replay backend answers from. ``prompt`` and
  ``response`` are that turn's (MT-Bench records set ``turn``; turn 2 is keyed by the second question, the
  request's last user message), ``source`` is ``gsm8k``, ``mmlu/<subject>`` or ``mt_bench/<category>``, and no
  token counts are recorded, so replay estimates them and says so. MMLU records answer with
  :data:`~accord.backends.replay.NO_TEXT_MARKER` and their correctness in ``metadata`` / ``quality``; MT-Bench
  ones have ``quality = score / 10``.

Contaminated prompts (``*/contaminated_prompts.jsonl``: they leaked into router training data) are dropped by
default, as the dataset README and RouteLLM's ``benchmarks.py`` do: a row goes when its prompt (whitespace-
normalised) is listed, an MT-Bench question when any of its turns is. What remains matches the README: GSM8K
1,307 of 1,319 prompts, MMLU 14,037 of 14,042 rows (13,932 distinct prompts: 105 questions appear twice; the
replay log keeps every row and a lookup answers with the first), MT-Bench 72 of 80 questions.

Where the rows come from (:func:`routellm_files`): a datasets directory holding ``routellm-evals/`` when one is
given (an argument, else ``$ACCORD_DATASETS``), else the copy vendored with Accord
(``accord/bench/data/routellm_evals/``: the files in one ``evals.tar.xz``, read in memory, never unpacked; its
LICENSE and NOTICE beside it), so a fresh clone or an installed wheel has them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import lzma
import math
import os
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec

from accord.backends.replay import OutcomeLog
from accord.protocol.pricing import estimate_tokens
from accord.routing.base import RouterError
from accord.routing.records import Outcome, normalize_prompt

__all__ = [
    "DATASETS_ENV",
    "PRICES",
    "SETS",
    "STRONG_MODEL",
    "WEAK_MODEL",
    "VENDORED_DIR",
    "RouteLLMAnswer",
    "RouteLLMFiles",
    "RouteLLMQuery",
    "RouteLLMRows",
    "RouteLLMSet",
    "contaminated_prompts",
    "default_datasets_dir",
    "load_routellm_log",
    "load_routellm_outcomes",
    "read_routellm",
    "routellm_files",
]

WEAK_MODEL: Final = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL: Final = "gpt-4-1106-preview"

RouteLLMSet = Literal["mmlu", "gsm8k", "mt_bench"]
SETS: Final[tuple[RouteLLMSet, ...]] = ("mmlu", "gsm8k", "mt_bench")

PRICES: Final[dict[str, tuple[float, float]]] = {
    STRONG_MODEL: (10.0, 30.0),
    WEAK_MODEL: (0.6, 0.6),
}
"""Model -> (input, output) price in USD per million tokens (= micro-USD per token)."""

DATASETS_ENV: Final = "ACCORD_DATASETS"
"""Environment variable naming the datasets directory (the one holding ``routellm-evals/``)."""

_KIND: Final[dict[str, str]] = {"mmlu": "mcq", "gsm8k": "math", "mt_bench": "chat"}
_JUDGE_SCALE: Final = 10.0


# --- where the data are ------------------------------------------------------------------------------------------
VENDORED_DIR: Final = Path(__file__).resolve().parent / "routellm_evals"
"""The copy shipped with Accord: ``evals.tar.xz`` (the ``routellm/evals`` tree), its LICENSE and NOTICE."""
_ARCHIVE: Final = VENDORED_DIR / "evals.tar.xz"


def default_datasets_dir() -> Path | None:
    """``$ACCORD_DATASETS`` (a directory holding ``routellm-evals/``), else None: the vendored copy."""
    env = os.environ.get(DATASETS_ENV)
    return Path(env) if env else None


@dataclass(frozen=True)
class RouteLLMFiles:
    """The ``routellm/evals`` tree, from a directory or from the vendored archive; paths are relative to it
    (``gsm8k/gsm8k_responses.csv``)."""

    where: str
    """Where the files are, for messages."""
    root: Path | None = None
    members: Mapping[str, bytes] | None = None

    def text(self, name: str) -> str:
        """The file's text (UTF-8); ``FileNotFoundError`` naming it when absent."""
        if self.members is None:
            assert self.root is not None
            return (self.root / name).read_text(encoding="utf-8")
        try:
            return self.members[name].decode("utf-8")
        except KeyError:
            raise FileNotFoundError(f"{name} is not in {self.where}") from None

    def exists(self, name: str) -> bool:
        if self.members is not None:
            return name in self.members
        return self.root is not None and (self.root / name).is_file()

    def lines(self, name: str) -> Iterator[str]:
        """The file's lines, split on newlines only (JSON strings may hold other line separators)."""
        return iter(self.text(name).split("\n"))

    def names(self, directory: str, suffix: str) -> list[str]:
        """The files directly in ``directory`` whose name ends with ``suffix``, sorted."""
        if self.members is None:
            assert self.root is not None
            return sorted(f"{directory}/{p.name}" for p in (self.root / directory).glob(f"*{suffix}"))
        prefix = directory.rstrip("/") + "/"
        return sorted(
            n for n in self.members if n.startswith(prefix) and "/" not in n[len(prefix) :] and n.endswith(suffix)
        )


@functools.cache
def _vendored() -> RouteLLMFiles:
    """The vendored archive, decompressed once per process into memory (about 9 MB)."""
    members: dict[str, bytes] = {}
    with lzma.open(_ARCHIVE) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
        for member in archive:
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None:
                members[member.name.removeprefix("evals/")] = handle.read()
    return RouteLLMFiles(where=str(_ARCHIVE), members=members)


def routellm_files(datasets_dir: str | Path | None = None) -> RouteLLMFiles:
    """The evaluation files: ``<datasets_dir>/routellm-evals/routellm/evals`` when a directory is given (else
    ``$ACCORD_DATASETS``), else the vendored copy. ``FileNotFoundError`` with the path tried when a given
    directory does not hold them."""
    base = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir()
    if base is None:
        return _vendored()
    evals = base / "routellm-evals" / "routellm" / "evals"
    if not evals.is_dir():
        raise FileNotFoundError(
            f"RouteLLM evaluation data not found at {evals}; pass the datasets directory, set ${DATASETS_ENV}, "
            "or leave both unset to use the copy vendored with Accord"
        )
    return RouteLLMFiles(where=str(evals), root=evals)


def contaminated_prompts(files: RouteLLMFiles, set_name: str) -> set[str]:
    """The whitespace-normalised ``eval_prompt`` of every line of ``<set>/contaminated_prompts.jsonl``."""
    name = f"{set_name}/contaminated_prompts.jsonl"
    if not files.exists(name):
        return set()
    return {normalize_prompt(str(json.loads(line)["eval_prompt"])) for line in files.lines(name) if line.strip()}


# --- what one read gives -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteLLMQuery:
    """One row of a set: its id (``<set>/<row>``, ``mmlu/<subject>/<row>``, ``mt_bench/<question id>``; rows are
    numbered before contaminated ones are dropped, so ids do not move), its user turns and its category."""

    query_id: str
    turns: tuple[str, ...]
    category: str | None = None


@dataclass(frozen=True)
class RouteLLMAnswer:
    """What one model answered to one turn of one query, and how it was graded."""

    query_id: str
    model: str
    turn: int
    correct: bool | None = None
    score: float | None = None
    response: str | None = None
    """The answer text; None when the set records none (MMLU) or the judge prompt's layout is not recognised."""


@dataclass(frozen=True)
class RouteLLMRows:
    """One set as read: its queries (in set order; MT-Bench by question id) and every recorded answer (in file
    order), contaminated prompts already dropped unless asked otherwise."""

    name: str
    """The set: ``mmlu``, ``gsm8k`` or ``mt_bench``."""
    queries: dict[str, RouteLLMQuery]
    answers: list[RouteLLMAnswer]

    def outcomes(self) -> list[Outcome]:
        """One record per query and model (weak then strong per query): the routers' view."""
        judged: dict[tuple[str, str], dict[int, RouteLLMAnswer]] = defaultdict(dict)
        for answer in self.answers:
            judged[(answer.query_id, answer.model)][answer.turn] = answer
        records: list[Outcome] = []
        for query in self.queries.values():
            for model in (WEAK_MODEL, STRONG_MODEL):
                turns = judged.get((query.query_id, model), {})
                if sorted(turns) != list(range(1, len(query.turns) + 1)):
                    raise RouterError(
                        "bad_input",
                        f"{query.query_id}: {model} answered turns {sorted(turns)} of {len(query.turns)}",
                    )
                records.append(self._query_outcome(query, model, [turns[t] for t in sorted(turns)]))
        return records

    def _query_outcome(self, query: RouteLLMQuery, model: str, answers: Sequence[RouteLLMAnswer]) -> Outcome:
        texts = [answer.response or "" for answer in answers]
        # turn i sees the earlier turns and answers again
        input_tokens = sum(
            estimate_tokens("".join(query.turns[: i + 1]) + "".join(texts[:i])) for i in range(len(answers))
        )
        output_tokens = sum(estimate_tokens(a.response) if a.response is not None else 1 for a in answers)
        scores = [answer.score for answer in answers if answer.score is not None]
        return self._scaled(
            Outcome(
                query_id=query.query_id,
                prompt=query.turns[0],
                model=model,
                kind=_KIND[self.name],
                category=query.category,
                correct=None if any(a.correct is None for a in answers) else all(a.correct for a in answers),
                score=sum(scores) / len(scores) if scores else None,
                response=answers[0].response,
                cost_micros=_cost(model, input_tokens, output_tokens),
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                source=self.name,
            )
        )

    def replay_log(self) -> OutcomeLog:
        """One record per query, model and turn, in file order: the replay backend's view."""
        log = OutcomeLog()
        for answer in self.answers:
            query = self.queries[answer.query_id]
            log.add(
                self._scaled(
                    Outcome(
                        query_id=query.query_id,
                        prompt=query.turns[answer.turn - 1],
                        model=answer.model,
                        kind=_KIND[self.name],
                        category=query.category,
                        correct=answer.correct,
                        score=answer.score,
                        response=answer.response,
                        turn=answer.turn if len(query.turns) > 1 else None,
                        source=self.name if query.category is None else f"{self.name}/{query.category}",
                    )
                )
            )
        return log

    def _scaled(self, record: Outcome) -> Outcome:
        """MT-Bench's judge scores on 1-10. The other sets keep ``score_max``'s default object: msgspec omits a
        default when encoding only if the value is that very object, so logs stay as they were."""
        return msgspec.structs.replace(record, score_max=_JUDGE_SCALE) if self.name == "mt_bench" else record


def _cost(model: str, input_tokens: int, output_tokens: int) -> int:
    price_in, price_out = PRICES.get(model, (0.0, 0.0))
    return math.ceil(input_tokens * price_in + output_tokens * price_out)


# --- the readers -------------------------------------------------------------------------------------------------
def _kept(turns: Iterable[str], dropped: set[str]) -> bool:
    return not any(normalize_prompt(turn) in dropped for turn in turns)


def _bool(value: str, where: str) -> bool:
    text = value.strip()
    if text not in ("True", "False"):
        raise RouterError("bad_input", f"{where}: expected True/False, got {value!r}")
    return text == "True"


def _read_csv(
    files: RouteLLMFiles, name: str, id_prefix: str, category: str | None, dropped: set[str], rows: RouteLLMRows
) -> None:
    """One responses CSV (a ``prompt`` column, a True/False column per model and, where recorded, a
    ``<model>_response`` column per model)."""
    base = name.rpartition("/")[2]
    with io.StringIO(files.text(name), newline="") as handle:
        for row_no, row in enumerate(csv.DictReader(handle)):
            prompt = row["prompt"]
            if not _kept((prompt,), dropped):
                continue
            query_id = f"{id_prefix}/{row_no}"
            rows.queries[query_id] = RouteLLMQuery(query_id=query_id, turns=(prompt,), category=category)
            for model in (WEAK_MODEL, STRONG_MODEL):
                rows.answers.append(
                    RouteLLMAnswer(
                        query_id=query_id,
                        model=model,
                        turn=1,
                        correct=_bool(row[model], f"{base}:{row_no + 2}"),
                        response=row.get(f"{model}_response"),
                    )
                )


def _read_mmlu(files: RouteLLMFiles, dropped: set[str], rows: RouteLLMRows) -> None:
    for name in files.names("mmlu/responses", ".csv"):
        subject = name.rpartition("/")[2].removeprefix("mmlu_").removesuffix(".csv")
        _read_csv(files, name, f"mmlu/{subject}", subject, dropped, rows)


def _read_gsm8k(files: RouteLLMFiles, dropped: set[str], rows: RouteLLMRows) -> None:
    _read_csv(files, "gsm8k/gsm8k_responses.csv", "gsm8k", None, dropped, rows)


_ANSWER_START: Final = "[The Start of Assistant's Answer]\n"
_ANSWER_END: Final = "\n[The End of Assistant's Answer]"
_TURN_MARK: Final = "### Assistant A:\n"
_CONVERSATION_END: Final = "<|The End of Assistant A's Conversation with User|>"


def _judged_answer(judge_prompt: str, turn: int) -> str | None:
    """The answer the judge saw for this turn, as its prompt quotes it (None when the layout is not recognised)."""
    if turn == 1:
        start = judge_prompt.find(_ANSWER_START)
        end = judge_prompt.find(_ANSWER_END, start + 1)
        begin = start + len(_ANSWER_START)
    else:
        end = judge_prompt.rfind(_CONVERSATION_END)
        start = judge_prompt.rfind(_TURN_MARK, 0, end if end >= 0 else None)
        begin = start + len(_TURN_MARK)
    return judge_prompt[begin:end].strip() if start >= 0 and end >= 0 else None


def _read_mt_bench(files: RouteLLMFiles, dropped: set[str], rows: RouteLLMRows) -> None:
    questions: dict[int, tuple[str, tuple[str, ...]]] = {}
    for line in files.lines("mt_bench/question.jsonl"):
        if line.strip():
            item = json.loads(line)
            questions[int(item["question_id"])] = (str(item["category"]), tuple(str(t) for t in item["turns"]))
    for qid in sorted(questions):
        category, turns = questions[qid]
        if _kept(turns, dropped):
            rows.queries[f"mt_bench/{qid}"] = RouteLLMQuery(
                query_id=f"mt_bench/{qid}", turns=turns, category=category
            )
    for line_no, line in enumerate(files.lines("mt_bench/judgements.jsonl"), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        qid, turn = int(item["question_id"]), int(item["turn"])
        if qid not in questions or not 1 <= turn <= len(questions[qid][1]):
            raise RouterError("bad_input", f"judgements.jsonl:{line_no}: no question {qid} with turn {turn}")
        if f"mt_bench/{qid}" not in rows.queries:
            continue
        score = float(item["score"])
        rows.answers.append(
            RouteLLMAnswer(
                query_id=f"mt_bench/{qid}",
                model=str(item["model"]),
                turn=turn,
                score=score if score >= 0 else None,  # FastChat writes -1 when the judge gave no rating
                response=_judged_answer(str(item["user_prompt"]), turn),
            )
        )


_READERS: Final = {"mmlu": _read_mmlu, "gsm8k": _read_gsm8k, "mt_bench": _read_mt_bench}


def read_routellm(
    name: str, datasets_dir: str | Path | None = None, *, drop_contaminated: bool = True
) -> RouteLLMRows:
    """Read one set (``mmlu``, ``gsm8k`` or ``mt_bench``) once; both views are built from the result.

    Raises ``FileNotFoundError`` naming the path tried when the data are missing, :class:`RouterError`
    (``bad_input``) for an unknown set or a malformed row.
    """
    reader = _READERS.get(name)
    if reader is None:
        raise RouterError("bad_input", f"unknown RouteLLM set {name!r}; choose from {', '.join(SETS)}")
    files = routellm_files(datasets_dir)
    rows = RouteLLMRows(name=name, queries={}, answers=[])
    reader(files, contaminated_prompts(files, name) if drop_contaminated else set(), rows)
    return rows


def load_routellm_outcomes(
    name: str, datasets_dir: str | Path | None = None, *, drop_contaminated: bool = True
) -> list[Outcome]:
    """The per-query outcome records of one set (:meth:`RouteLLMRows.outcomes`), weak then strong per query."""
    return read_routellm(name, datasets_dir, drop_contaminated=drop_contaminated).outcomes()


def load_routellm_log(
    datasets_dir: str | Path | None = None, *, sets: Iterable[str] = SETS, drop_contaminated: bool = True
) -> OutcomeLog:
    """One replay log (:meth:`RouteLLMRows.replay_log`) with the chosen sets (default all three), in that order."""
    log = OutcomeLog()
    for name in sets:
        for record in read_routellm(name, datasets_dir, drop_contaminated=drop_contaminated).replay_log():
            log.add(record)
    return log
