"""Query features for routers: hashed word and character n-grams, shape buckets, kind and category.

Deterministic across processes and machines (CRC-32 of namespaced tokens, never Python's salted ``hash``), so a
saved router scores the same features when loaded elsewhere. The text n-grams of a query are weighted
``log(1 + count)`` and scaled to unit L2 norm (TF without IDF: the IDF of a word would have to be saved too, and
the L2 penalty of the logistic models already damps rare words); category, kind and shape features are one-hot
with their own weights, outside that norm, so that a known subject weighs as much as the whole text.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from accord.routing.base import Query
from accord.routing.sparse import SparseRows

__all__ = ["TextFeaturizer", "add_features", "hashed"]

_WORD: Final = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def hashed(token: str, dim: int) -> int:
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) % dim


def add_features(row: dict[int, float], tokens: Iterable[str], dim: int, *, weight: float = 1.0) -> None:
    for token in tokens:
        key = hashed(token, dim)
        row[key] = row.get(key, 0.0) + weight


def _bucket(value: float) -> int:
    return min(int(math.log2(1.0 + value)), 20)


class TextFeaturizer(msgspec.Struct, frozen=True, kw_only=True):
    """The feature map, as data (saved inside a router's file)."""

    dim_bits: Annotated[int, Meta(ge=4, le=24)] = 18
    words: bool = True
    bigrams: bool = True
    char_ngrams: Annotated[int, Meta(ge=0, le=8)] = 0
    """Character n-grams of this length (0: none)."""
    max_chars: Annotated[int, Meta(ge=1)] = 4000
    """Only the first and last ``max_chars // 2`` characters are read (long prompts cost no more)."""
    category_weight: float = 3.0
    kind_weight: float = 1.0
    shape_weight: float = 1.0

    @property
    def dim(self) -> int:
        return 1 << self.dim_bits

    def text_tokens(self, text: str) -> list[str]:
        if len(text) > self.max_chars:
            half = self.max_chars // 2
            text = text[:half] + " " + text[-half:]
        lowered = text.lower()
        words = _WORD.findall(lowered)
        tokens: list[str] = []
        if self.words:
            tokens.extend("w:" + w for w in words)
        if self.bigrams:
            tokens.extend(f"b:{a} {b}" for a, b in itertools.pairwise(words))
        if self.char_ngrams:
            n = self.char_ngrams
            squeezed = " ".join(lowered.split())
            tokens.extend("c:" + squeezed[i : i + n] for i in range(max(0, len(squeezed) - n + 1)))
        return tokens

    def shape_tokens(self, text: str) -> list[str]:
        digits = sum(ch.isdigit() for ch in text)
        return [
            f"len:{_bucket(len(text))}",
            f"words:{_bucket(len(text.split()))}",
            f"lines:{_bucket(text.count(chr(10)))}",
            f"digits:{_bucket(digits)}",
        ]

    def row(self, query: Query) -> dict[int, float]:
        dim = self.dim
        row: dict[int, float] = {}
        add_features(row, self.text_tokens(query.text), dim)
        norm = math.sqrt(sum(math.log1p(v) ** 2 for v in row.values())) or 1.0
        row = {k: math.log1p(v) / norm for k, v in row.items()}
        if self.shape_weight:
            add_features(row, self.shape_tokens(query.text), dim, weight=self.shape_weight)
        if self.kind_weight:
            add_features(row, ["kind:" + query.kind], dim, weight=self.kind_weight)
        if self.category_weight and query.category is not None:
            add_features(row, ["cat:" + query.category], dim, weight=self.category_weight)
        return row

    def transform(self, queries: Sequence[Query]) -> SparseRows:
        return SparseRows.from_rows([self.row(q) for q in queries], self.dim)
