"""A cascade verifier: a learned scorer of (query, weak answer), as FrugalGPT's and AutoMix's verifiers are.

The weak model answers first; the router reads the answer and predicts whether it is right. The score is
``p_strong(query) - p_weak(query, answer)``: escalate where the strong model is expected to do better than the
answer in hand. The weak model's predictor sees the query's features plus the answer's:

- its words and word pairs (hashed, own unit norm, weight ``answer_weight``);
- its shape: length, lines, whether it ends with a final answer (``#### 42``, "the answer is 42"), whether it
  looks cut off, how many numbers it uses;
- arithmetic checks: every ``a op b = c`` step and every ``<<expr=c>>`` calculator note is recomputed (with a
  small parser for numbers, + - * / x and parentheses, never ``eval``); the count of wrong steps is a feature;
- hedging and self-correction markers ("however", "assume", "approximately", "actually", "cannot", ...);
- whether the final number already appears in the question (copying a given number is a common failure).

The strong model's predictor sees only the query (its answer does not exist yet). ``score`` raises
:class:`~accord.routing.base.RouterError` (``answer_required``) for a query without ``answer``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.common import PairRouter, pack, unpack
from accord.routing.features import TextFeaturizer, add_features
from accord.routing.sparse import SparseRows, fit_logistic, sigmoid
from accord.routing.table import PairTable

__all__ = ["CascadeRouter", "CascadeState", "answer_tokens", "check_arithmetic"]

_NUMBER: Final = r"-?\d[\d,]*(?:\.\d+)?"
_FINAL: Final = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_ANSWER_IS: Final = re.compile(r"answer is[:\s]*\$?\s*(" + _NUMBER + ")", re.IGNORECASE)
_NUMBERS: Final = re.compile(_NUMBER)
_CALC: Final = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_STEP: Final = re.compile(
    r"(\(?\$?"
    + _NUMBER
    + r"\)?(?:\s*[-+*/x\u00d7\u00f7]\s*\(?\$?"
    + _NUMBER
    + r"\)?)+)\s*=\s*\$?("
    + _NUMBER
    + ")"
)
_HEDGES: Final = (
    "however",
    "assume",
    "assuming",
    "approximately",
    "about",
    "round",
    "actually",
    "wait",
    "mistake",
    "cannot",
    "can't",
    "not possible",
    "unclear",
    "re-evaluate",
    "recalculate",
    "instead",
    "but",
    "since you can't",
    "not enough information",
)
_OPS: Final[dict[type[ast.operator], Callable[[float, float], float]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").replace("$", ""))
    except ValueError:
        return None


def _arith(expr: str) -> float | None:
    """Value of a plain arithmetic expression (numbers, + - * / x, parentheses); None if it is anything else."""
    cleaned = expr.replace(",", "").replace("$", "").replace("\u00d7", "*").replace("\u00f7", "/")
    cleaned = re.sub(r"(?<=[\d)\s])x(?=[\s\d(])", "*", cleaned)
    if len(cleaned) > 200:
        return None
    try:
        tree = ast.parse(cleaned.strip(), mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("not arithmetic")

    try:
        value = walk(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def check_arithmetic(text: str) -> tuple[int, int]:
    """(steps checked, steps wrong) over ``<<expr=c>>`` notes and inline ``a op b = c`` steps."""
    checked = wrong = 0
    for pattern, scanned in ((_CALC, text), (_STEP, _CALC.sub(" ", text))):
        for match in pattern.finditer(scanned):
            value, claimed = _arith(match.group(1)), _to_float(match.group(2))
            if value is None or claimed is None:
                continue
            checked += 1
            if abs(value - claimed) > 1e-4 * max(1.0, abs(value)) and abs(round(value, 2) - claimed) > 1e-9:
                wrong += 1
    return checked, wrong


def _bucket(value: float) -> int:
    return min(int(math.log2(1.0 + value)), 20)


def answer_tokens(question: str, answer: str) -> list[str]:
    """The hand-made features of an answer, as tokens (each weighs 1)."""
    stripped = answer.strip()
    lowered = stripped.lower()
    final = _FINAL.findall(stripped) or _ANSWER_IS.findall(stripped)
    numbers = _NUMBERS.findall(stripped)
    checked, wrong = check_arithmetic(stripped)
    last_line = stripped.splitlines()[-1] if stripped else ""
    tokens = [
        f"a.len:{_bucket(len(stripped))}",
        f"a.lines:{_bucket(stripped.count(chr(10)))}",
        f"a.numbers:{_bucket(len(numbers))}",
        f"a.final:{bool(final)}",
        f"a.final_count:{min(len(final), 3)}",
        f"a.ends_number:{bool(_NUMBERS.search(last_line))}",
        f"a.ends_sentence:{stripped[-1:] in ('.', '!') if stripped else False}",
        f"a.checked:{_bucket(checked)}",
        f"a.wrong:{min(wrong, 3)}",
        f"a.any_wrong:{wrong > 0}",
    ]
    if final:
        value = _to_float(final[-1])
        tokens.append(f"a.final_int:{value is not None and value == int(value)}")
        tokens.append(f"a.final_neg:{value is not None and value < 0}")
        tokens.append(f"a.final_mag:{_bucket(abs(value)) if value is not None else -1}")
        question_numbers = {_to_float(n) for n in _NUMBERS.findall(question)}
        tokens.append(f"a.final_in_question:{value in question_numbers}")
        last_numbers = [_to_float(n) for n in numbers[-4:-1]]
        tokens.append(f"a.final_matches_work:{value in last_numbers}")
    tokens.extend(f"a.hedge:{h}" for h in _HEDGES if h in lowered)
    return tokens


class CascadeState(msgspec.Struct, frozen=True, kw_only=True, tag="cascade"):
    features: TextFeaturizer
    answer_weight: float
    l2: float
    weak_w: bytes
    weak_b: float
    strong_w: bytes
    strong_b: float


class CascadeRouter(PairRouter):
    kind = "cascade"

    def __init__(
        self,
        weak: str = "",
        strong: str = "",
        *,
        features: TextFeaturizer | None = None,
        answer_weight: float = 2.0,
        l2: float = 1.0,
        max_iter: int = 200,
    ) -> None:
        super().__init__(weak, strong)
        self.features = features if features is not None else TextFeaturizer()
        self.answer_weight = answer_weight
        self.l2 = l2
        self.max_iter = max_iter
        dim = self.features.dim
        self._w = (np.zeros(dim), np.zeros(dim))
        self._b = (0.0, 0.0)

    def _answer_row(self, query: Query) -> dict[int, float]:
        if query.answer is None:
            raise RouterError("answer_required", "the cascade router scores (query, weak answer) pairs")
        dim = self.features.dim
        row = self.features.row(query)
        text: dict[int, float] = {}
        words = self.features.text_tokens(query.answer)
        add_features(text, ("ans|" + t for t in words), dim)
        norm = math.sqrt(sum(math.log1p(v) ** 2 for v in text.values())) or 1.0
        for key, value in text.items():
            row[key] = row.get(key, 0.0) + self.answer_weight * math.log1p(value) / norm
        add_features(row, answer_tokens(query.text, query.answer), dim)
        return row

    def _matrices(self, queries: Sequence[Query]) -> tuple[SparseRows, SparseRows]:
        dim = self.features.dim
        return (
            SparseRows.from_rows([self._answer_row(q) for q in queries], dim),
            self.features.transform(queries),
        )

    def fit_table(self, table: PairTable) -> None:
        self._begin_fit(table)
        x_weak, x_strong = self._matrices(table.queries)
        w_weak, b_weak = fit_logistic(x_weak, table.q_weak / table.scale, l2=self.l2, max_iter=self.max_iter)
        w_strong, b_strong = fit_logistic(
            x_strong, table.q_strong / table.scale, l2=self.l2, max_iter=self.max_iter
        )
        self._w, self._b = (w_weak, w_strong), (b_weak, b_strong)
        self.fitted = True

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        x_weak, x_strong = self._matrices(queries)
        return (
            sigmoid(x_weak.matvec(self._w[0]) + self._b[0]),
            sigmoid(x_strong.matvec(self._w[1]) + self._b[1]),
        )

    def state(self) -> CascadeState:
        return CascadeState(
            features=self.features,
            answer_weight=self.answer_weight,
            l2=self.l2,
            weak_w=pack(self._w[0]),
            weak_b=self._b[0],
            strong_w=pack(self._w[1]),
            strong_b=self._b[1],
        )

    @classmethod
    def from_state(cls, weak: str, strong: str, state: CascadeState) -> CascadeRouter:
        router = cls(weak, strong, features=state.features, answer_weight=state.answer_weight, l2=state.l2)
        dim = state.features.dim
        router._w = (unpack(state.weak_w, dim), unpack(state.strong_w, dim))
        router._b = (state.weak_b, state.strong_b)
        router.fitted = True
        return router
