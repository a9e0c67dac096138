"""Where things are in the repository, for tests that read committed files or start subprocesses."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SPEC_DIR: Final = REPO_ROOT / "spec"
