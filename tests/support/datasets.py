"""Where tests find the RouteLLM evaluation rows, and the marker that says a test reads them.

The rows are vendored with Accord (``accord/bench/data/routellm_evals/evals.tar.xz``, read in memory), so a fresh
clone has them; ``$ACCORD_DATASETS`` points the tests at a directory holding ``routellm-evals/`` instead. The
lookup is the library's own (:func:`accord.bench.data.routellm.routellm_files`).
A test that reads them is marked ``@dataset`` (``pytest -m dataset`` selects them, ``-m "not dataset"`` leaves
them out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from accord.bench.data.routellm import RouteLLMFiles, default_datasets_dir, routellm_files

DATASETS_DIR: Final = default_datasets_dir()
"""``$ACCORD_DATASETS``, or None: the vendored copy."""

dataset = pytest.mark.dataset
"""Marks a test that reads the RouteLLM rows."""


def require_datasets() -> Path | None:
    """The datasets directory to pass to the readers (None: the vendored copy), after checking the rows are
    there."""
    routellm_files(DATASETS_DIR).text("gsm8k/contaminated_prompts.jsonl")
    return DATASETS_DIR


def evals_files() -> RouteLLMFiles:
    """The ``routellm/evals`` files the readers read."""
    return routellm_files(DATASETS_DIR)
