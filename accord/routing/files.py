"""Router files: a router's kind, models, state and a fingerprint of what it was trained on, as data.

A pair router's file names its ``weak`` and ``strong`` model; the file of a learned predictor over any number of
models (:func:`save_predictor`, :func:`load_predictor`) lists them in ``models`` and leaves the pair empty.

The file is msgpack (``.msgpack``, the default) or JSON (``.json``), encoded by msgspec; numeric arrays are
little-endian float32 bytes. No pickle: loading a router file runs no code. ``trained_on`` holds the first
8 bytes of the SHA-256 of every training prompt (whitespace-normalised), so ``accord router eval`` can say when
it is asked to evaluate a router on queries it was trained on (in-sample numbers flatter a router).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import msgspec

from accord.files import MAX_DATA_FILE_BYTES, read_capped
from accord.routing.bandit import BanditRouter, BanditState
from accord.routing.base import Query, RouterError
from accord.routing.common import PairRouter
from accord.routing.logistic import LogisticRouter, LogisticState
from accord.routing.mf import MFRouter, MFState
from accord.routing.predictor import LearnedPredictor, PredictorState
from accord.routing.predictor_pair import PredictorRouter
from accord.routing.subject import SubjectRouter, SubjectState
from accord.routing.verifier import CascadeRouter, CascadeState

__all__ = [
    "DEFAULT_KINDS",
    "ROUTER_KINDS",
    "RouterFile",
    "fingerprint",
    "load_predictor",
    "load_router",
    "make_router",
    "overlap",
    "read_router_file",
    "save_predictor",
    "save_router",
]

FILE_VERSION: Final = 1

AnyState = SubjectState | LogisticState | MFState | BanditState | CascadeState | PredictorState

ROUTER_KINDS: Final[dict[str, Callable[[], PairRouter]]] = {
    "subject": SubjectRouter,
    "logistic": LogisticRouter,
    "mf": MFRouter,
    "bandit": BanditRouter,
    "cascade": CascadeRouter,
    "predictor": PredictorRouter,
}

DEFAULT_KINDS: Final = ("subject", "logistic", "mf", "bandit", "cascade")
"""What the pair suites cross-fit when no kind is named. ``predictor`` (the N-model predictor on the pair) is
left out for its cost: it fits ``folds + 1`` times per fold (out-of-fold calibration), some 15 minutes on MMLU's
14,000 rows on a loaded two-core machine; name it (``--kind predictor``) to include it."""


class RouterFile(msgspec.Struct, frozen=True, kw_only=True):
    v: int = FILE_VERSION
    kind: str
    weak: str
    strong: str
    state: AnyState
    trained_on: bytes = b""
    trained_rows: int = 0
    models: list[str] = []
    """Every model of an N-model predictor's file (empty for a pair router's)."""


def make_router(kind: str) -> PairRouter:
    """A new, unfitted router of ``kind`` with default settings."""
    try:
        return ROUTER_KINDS[kind]()
    except KeyError:
        raise RouterError("unknown_kind", f"{kind!r}; choose from {', '.join(ROUTER_KINDS)}") from None


def _digest(text: str) -> bytes:
    return hashlib.sha256(" ".join(text.split()).encode()).digest()[:8]


def fingerprint(queries: Iterable[Query]) -> bytes:
    """Sorted, de-duplicated 8-byte prompt digests."""
    return b"".join(sorted({_digest(q.text) for q in queries}))


def overlap(file: RouterFile, queries: Iterable[Query]) -> float:
    """Share of ``queries`` whose prompt the router was trained on (0.0 when the file has no fingerprint)."""
    seen = {file.trained_on[i : i + 8] for i in range(0, len(file.trained_on), 8)}
    listed = list(queries)
    if not listed or not seen:
        return 0.0
    return sum(_digest(q.text) in seen for q in listed) / len(listed)


def _state(router: PairRouter) -> AnyState:
    if isinstance(
        router, SubjectRouter | LogisticRouter | MFRouter | BanditRouter | CascadeRouter | PredictorRouter
    ):
        return router.state()
    raise RouterError("unknown_kind", f"cannot save a {type(router).__name__}")


def save_router(router: PairRouter, path: str | Path, *, trained_on: Iterable[Query] = ()) -> RouterFile:
    """Write ``router`` to ``path`` (JSON when it ends in ``.json``, else msgpack); returns what was written."""
    listed = list(trained_on)
    file = RouterFile(
        kind=router.kind,
        weak=router.weak,
        strong=router.strong,
        state=_state(router),
        trained_on=fingerprint(listed),
        trained_rows=len(listed),
    )
    return _write(file, path)


def save_predictor(
    predictor: LearnedPredictor, path: str | Path, *, trained_on: Iterable[Query] = ()
) -> RouterFile:
    """Write an N-model predictor to ``path`` (JSON when it ends in ``.json``, else msgpack)."""
    listed = list(trained_on)
    file = RouterFile(
        kind=LearnedPredictor.kind,
        weak="",
        strong="",
        models=list(predictor.models),
        state=predictor.state(),
        trained_on=fingerprint(listed),
        trained_rows=len(listed),
    )
    return _write(file, path)


def _write(file: RouterFile, path: str | Path) -> RouterFile:
    path = Path(path)
    raw = msgspec.json.encode(file) if path.suffix == ".json" else msgspec.msgpack.encode(file)
    path.write_bytes(raw)
    return file


def read_router_file(path: str | Path) -> RouterFile:
    path = Path(path)
    raw = read_capped(path, cap=MAX_DATA_FILE_BYTES)
    try:
        if path.suffix == ".json":
            file = msgspec.json.decode(raw, type=RouterFile)
        else:
            file = msgspec.msgpack.decode(raw, type=RouterFile)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RouterError("bad_file", f"{path}: {exc}") from exc
    if file.v != FILE_VERSION:
        raise RouterError("bad_file", f"{path}: router file version {file.v}, this build reads {FILE_VERSION}")
    return file


def load_predictor(path: str | Path) -> tuple[LearnedPredictor, RouterFile]:
    """The learned predictor saved at ``path`` (by :func:`save_predictor`, or a pair router of kind
    ``predictor``) and its file record."""
    file = read_router_file(path)
    if not isinstance(file.state, PredictorState):
        raise RouterError("bad_file", f"{path}: a {file.kind} router, not a learned predictor")
    return LearnedPredictor.from_state(file.state), file


def load_router(path: str | Path) -> tuple[PairRouter, RouterFile]:
    """The pair router saved at ``path`` (ready to score) and its file record."""
    file = read_router_file(path)
    if file.models and not (file.weak and file.strong):
        raise RouterError("bad_file", f"{path}: a predictor over {len(file.models)} models, not a pair router")
    state = file.state
    router: PairRouter
    if isinstance(state, SubjectState):
        router = SubjectRouter.from_state(file.weak, file.strong, state)
    elif isinstance(state, LogisticState):
        router = LogisticRouter.from_state(file.weak, file.strong, state)
    elif isinstance(state, MFState):
        router = MFRouter.from_state(file.weak, file.strong, state)
    elif isinstance(state, BanditState):
        router = BanditRouter.from_state(file.weak, file.strong, state)
    elif isinstance(state, PredictorState):
        router = PredictorRouter.from_state(file.weak, file.strong, state)
    else:
        router = CascadeRouter.from_state(file.weak, file.strong, state)
    return router, file
