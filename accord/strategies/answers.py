"""Comparing free-text answers: normalisation per answer form and majority voting.

Two answers vote together when their normal forms are equal. The normal form depends on the Ask's ``form``:

- ``math``: the final number (the last number in the text, or the one after ``####`` / ``answer is`` /
  ``\\boxed{}``), as a canonical decimal (``1,000.50`` -> ``1000.5``, ``3.0`` -> ``3``);
- ``mcq``: the chosen option letter (``(B)``, ``Answer: B``, ``the answer is b``);
- anything else: lower case, punctuation dropped, whitespace collapsed.

A vote's winner is the normal form with the most votes; ties go to the form whose voters were paid most in total
(a proxy for the stronger models), then to the earliest answer. The text returned is the first full answer of the
winning form, so a vote never invents text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Final

from accord.strategies.base import Answer, CallRecord

__all__ = ["extract_choice", "extract_number", "majority", "normalise"]

_NUMBER: Final = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_FINAL: Final = re.compile(r"(?:####|answer is|answer:|\\boxed\{)\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_CHOICES: Final = (  # in order of precedence: a stated answer, then a marked option, then a bare letter line
    re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?:option|choice)\s*[:\-]?\s*\(?([A-J])\)?(?![A-Za-z])|\(([A-J])\)", re.IGNORECASE),
    re.compile(r"^\s*([A-J])[.):\s]*$", re.IGNORECASE | re.MULTILINE),
)
_CONFIDENCE_LINE: Final = re.compile(r"^\s*confidence\s*[:=].*$", re.IGNORECASE | re.MULTILINE)
_PUNCT: Final = str.maketrans("", "", string.punctuation)


def _canonical(number: str) -> str | None:
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:
        return None
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def extract_number(text: str) -> str | None:
    """The final numeric answer of ``text`` in canonical form, or None when it has no number."""
    final = _FINAL.findall(text)
    if final:
        return _canonical(final[-1])
    numbers = _NUMBER.findall(text)
    return _canonical(numbers[-1]) if numbers else None


def extract_choice(text: str) -> str | None:
    """The option letter ``text`` settles on (upper case), or None."""
    for pattern in _CHOICES:
        found: list[str | tuple[str, ...]] = pattern.findall(text)
        if found:
            last = found[-1]
            return (last if isinstance(last, str) else next(g for g in last if g)).upper()
    return None


def normalise(text: str, form: str = "chat") -> str:
    """The form two answers must share to vote together (see the module docstring)."""
    if form in ("math", "mcq"):
        text = _CONFIDENCE_LINE.sub("", text).strip() or text  # a cascade's "Confidence: N/10" is no answer
    if form == "math":
        number = extract_number(text)
        if number is not None:
            return number
    elif form == "mcq":
        choice = extract_choice(text)
        if choice is not None:
            return choice
    return " ".join(text.lower().translate(_PUNCT).split())


def majority(records: Sequence[CallRecord], form: str = "chat") -> Answer | None:
    """The majority answer of the records that answered (see the module docstring), its confidence the winning
    share of the votes; None when no record answered."""
    groups: dict[str, list[CallRecord]] = {}
    for record in records:
        if record.answer is not None:
            groups.setdefault(normalise(record.answer, form), []).append(record)
    if not groups:
        return None
    order = {form: i for i, form in enumerate(groups)}
    best = max(groups, key=lambda f: (len(groups[f]), sum(r.price_micros for r in groups[f]), -order[f]))
    voters = groups[best]
    total = sum(len(v) for v in groups.values())
    text = voters[0].answer
    assert text is not None
    return Answer(text=text, calls=tuple(voters), confidence=len(voters) / total)
