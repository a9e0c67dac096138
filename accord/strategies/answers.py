"""Comparing answers: normalisation per answer form, agreement between two answers, and voting.

The normal form depends on the Ask's ``form``:

- ``math``: the final number (the last number in the text, or the one after ``####`` / ``answer is`` /
  ``\\boxed{}``), as a canonical decimal (``1,000.50`` -> ``1000.5``, ``3.0`` -> ``3``);
- ``mcq``: the chosen option letter (``(B)``, ``Answer: B``, ``the answer is b``);
- anything else: lower case, punctuation dropped, whitespace collapsed.

Two ``math`` or ``mcq`` answers agree when their normal forms are equal. Free text (``chat``) is rarely worded the
same twice, so two free-text answers agree when their *content words* overlap: the words of the normal form less
common English function words and less the words of the question (an answer that restates the question says
nothing by it). Their similarity is the F1 of the two bags of content words, and they agree at
:data:`AGREEMENT` (0.5) or more: "Rome" agrees with "The capital of Italy is Rome." asked "What is the capital of
Italy?", and "... is Milan" does not. An answer with no content word agrees only with the same normal form.

A vote's winner is the answer with the most answers agreeing with it (itself included), then the highest summed
similarity to all answers (the medoid), then the most paid in total to the answers agreeing with it (a proxy for
the stronger models), then the earliest. For ``math`` and ``mcq`` this is the normal form with most votes, ties
to the best-paid form, then to the form answered first. The text returned is the winner's own answer, so a vote
never invents text; its confidence is the share of the answers that agree with it.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Final

from accord.strategies.base import Answer, CallRecord

__all__ = [
    "AGREEMENT",
    "agrees",
    "content_words",
    "extract_choice",
    "extract_number",
    "majority",
    "normalise",
    "similarity",
]

_NUMBER: Final = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_FINAL: Final = re.compile(r"(?:####|answer is|answer:|\\boxed\{)\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
_CHOICES: Final = (  # in order of precedence: a stated answer, then a marked option, then a bare letter line
    re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"(?:option|choice)\s*[:\-]?\s*\(?([A-J])\)?(?![A-Za-z])|\(([A-J])\)", re.IGNORECASE),
    re.compile(r"^\s*([A-J])[.):\s]*$", re.IGNORECASE | re.MULTILINE),
)
_CONFIDENCE_LINE: Final = re.compile(r"^\s*confidence\s*[:=].*$", re.IGNORECASE | re.MULTILINE)
_PUNCT: Final = str.maketrans("", "", string.punctuation)
_EXACT_FORMS: Final = frozenset({"math", "mcq"})
AGREEMENT: Final = 0.5
"""The similarity at which two free-text answers agree (vote together)."""
_FUNCTION_WORD_LIST: Final = (
    "a about above after again against all am an and any are as at be because been before being below between "
    "both but by can could did do does doing down during each few for from further had has have having he her "
    "here hers herself him himself his how i if in into is it its itself just me more most my myself of off on "
    "once only or other our ours ourselves out over own same she should so some such than that thats the their "
    "theirs them themselves then there these they this those through to too under until up very was we were what "
    "when where which while who whom why will with would you your yours yourself yourselves also actually indeed "
    "well"
)
_FUNCTION_WORDS: Final = frozenset(_FUNCTION_WORD_LIST.split())
"""English function words: they carry no claim, so they never make two answers agree. Negations (no, not, never)
and yes are not among them: they are what sets many answers apart."""


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


def content_words(text: str, question: str = "") -> Counter[str]:
    """The bag of words a free-text answer claims: its normal-form words less function words and less the words of
    ``question`` (and less a cascade's ``Confidence: N/10`` line, which is no claim)."""
    dropped = _FUNCTION_WORDS | set(normalise(question).split())
    return Counter(w for w in normalise(_CONFIDENCE_LINE.sub("", text)).split() if w not in dropped)


def similarity(a: str, b: str, form: str = "chat", question: str = "") -> float:
    """How far two answers say the same, 0..1 (see the module docstring): for ``math`` and ``mcq`` 1.0 when the
    normal forms are equal, else 0.0; for free text the F1 of their content words."""
    if form in _EXACT_FORMS:
        return 1.0 if normalise(a, form) == normalise(b, form) else 0.0
    return _bag_similarity(content_words(a, question), content_words(b, question), a, b)


def agrees(a: str, b: str, form: str = "chat", question: str = "") -> bool:
    """Whether two answers vote together: similarity at :data:`AGREEMENT` or more."""
    return similarity(a, b, form, question) >= AGREEMENT


def _bag_similarity(x: Counter[str], y: Counter[str], a: str, b: str) -> float:
    if not x or not y:  # an answer with no claim of its own agrees only with the same words
        return 1.0 if normalise(a) == normalise(b) else 0.0
    common = sum((x & y).values())
    return 2 * common / (x.total() + y.total())


def majority(records: Sequence[CallRecord], form: str = "chat", question: str = "") -> Answer | None:
    """The answer the records that answered agree on most (see the module docstring), its confidence the share of
    those answers that agree with it; None when no record answered. ``question`` lets free-text answers that
    restate it still be compared on what they add."""
    answered = [r for r in records if r.answer is not None]
    if not answered:
        return None
    texts = [r.answer or "" for r in answered]
    n = len(texts)
    if form in _EXACT_FORMS:
        keys = [normalise(t, form) for t in texts]
        sim = [[1.0 if keys[i] == keys[j] else 0.0 for j in range(n)] for i in range(n)]
    else:
        bags = [content_words(t, question) for t in texts]
        sim = [[_bag_similarity(bags[i], bags[j], texts[i], texts[j]) for j in range(n)] for i in range(n)]
    backers = [[answered[j] for j in range(n) if sim[i][j] >= AGREEMENT] for i in range(n)]

    def rank(i: int) -> tuple[int, float, int, int]:
        return (len(backers[i]), sum(sim[i]), sum(r.price_micros for r in backers[i]), -i)

    best = max(range(len(answered)), key=rank)
    return Answer(text=texts[best], calls=tuple(backers[best]), confidence=len(backers[best]) / len(answered))
