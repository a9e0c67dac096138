"""``python -m tests.mutation run [GROUP...]`` (mutmut over the core modules, see tests/mutation/mutants.py) and
``python -m tests.mutation planted [NAME...]`` (issue 19's bugs, see tests/mutation/planted.py)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from tests.mutation import mutants, planted


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation")
    parser.add_argument(
        "--scratch", type=Path, default=None, help="where the scratch copies go (default: a temp dir)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="mutmut over the core modules, each group against its fast tests")
    r.add_argument("groups", nargs="*", help=", ".join(mutants.GROUPS) + " (default: all)")
    r.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    r.add_argument("--only", default="", help="only the group's modules whose path contains this")
    p = sub.add_parser("planted", help="plant the bugs of issue 19 one by one and list the tests that catch each")
    p.add_argument("names", nargs="*", help=", ".join(b.name for b in planted.PLANTED))
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="accord-mutation-"))
    if args.command == "run":
        unknown = set(args.groups) - set(mutants.GROUPS)
        if unknown:
            parser.error(f"unknown groups {sorted(unknown)}")
        return mutants.run(args.groups, scratch, args.max_children, args.only)
    return planted.run(args.names, scratch)


if __name__ == "__main__":
    raise SystemExit(main())
