"""A small TOML writer for JSON-like configs (the standard library only reads TOML).

Tables become ``[a.b]`` sections, lists of tables ``[[a.b]]`` sections, other lists inline arrays; ``None``
values are left out (TOML has no null). Output is deterministic: keys keep their order, scalars before tables.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["dumps"]

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(value: str) -> str:
    # JSON's escapes are valid TOML basic-string escapes; TOML also wants DEL escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007F")


def _is_table_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def _inline(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        items = [f"{_key(str(k))} = {_inline(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_inline(item) for item in value if item is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(lines: list[str], path: list[str], table: Mapping[str, object]) -> None:
    for key, value in table.items():
        if value is None or isinstance(value, Mapping) or _is_table_list(value):
            continue
        lines.append(f"{_key(key)} = {_inline(value)}")
    for key, value in table.items():
        sub = [*path, _key(key)]
        if isinstance(value, Mapping):
            lines.extend(["", f"[{'.'.join(sub)}]"])
            _table(lines, sub, value)
        elif _is_table_list(value):
            assert isinstance(value, list)
            for item in value:
                lines.extend(["", f"[[{'.'.join(sub)}]]"])
                _table(lines, sub, item)


def dumps(document: Mapping[str, object]) -> str:
    """TOML text for ``document`` (a mapping of str keys to JSON-like values), ending in a newline."""
    lines: list[str] = []
    _table(lines, [], document)
    return "\n".join(lines).lstrip("\n") + "\n"
