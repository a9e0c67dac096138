"""Where tests find the shared, read-only data sets, and the marker that says a test reads them.

The data live outside the repository, in ``$ACCORD_DATASETS`` or else ``../shared/datasets`` relative to the
repository root (never copied in): the lookup the library itself uses
(:func:`accord.bench.data.routellm.default_datasets_dir`).
A test that reads them is marked ``@dataset`` (``pytest -m dataset`` selects them, ``-m "not dataset"`` leaves
them out) and fails with the path it tried when the data are missing: it is not skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from accord.bench.data.routellm import default_datasets_dir

DATASETS_DIR: Final = default_datasets_dir()
ROUTELLM_EVALS_DIR: Final = DATASETS_DIR / "routellm-evals" / "routellm" / "evals"

dataset = pytest.mark.dataset
"""Marks a test that reads ``DATASETS_DIR``."""


def require_datasets() -> Path:
    """``DATASETS_DIR``, after checking the RouteLLM evaluation files are there."""
    assert ROUTELLM_EVALS_DIR.is_dir(), f"shared data sets missing: expected {ROUTELLM_EVALS_DIR}"
    return DATASETS_DIR
