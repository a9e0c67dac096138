"""The vote before content words, kept as a reference: answers vote together only when their normal forms are
equal.

For ``math`` and ``mcq`` this is still the rule (spec/STRATEGIES.md section 3), so the unit tests check
:func:`accord.strategies.majority` against it; for free text it is the baseline the free-text bench compares with.
"""

from __future__ import annotations

from collections.abc import Sequence

from accord.strategies import CallRecord, normalise


def exact_vote(records: Sequence[CallRecord], form: str) -> tuple[str, list[str | None], float] | None:
    """(text, voters' agent ids, confidence) of the normal form with most votes, ties to the form whose voters were
    paid most, then to the form answered first; the text is the form's first answer. None when nobody answered."""
    groups: dict[str, list[CallRecord]] = {}
    for r in records:
        if r.answer is not None:
            groups.setdefault(normalise(r.answer, form), []).append(r)
    if not groups:
        return None
    first = {f: i for i, f in enumerate(groups)}
    best = max(groups, key=lambda f: (len(groups[f]), sum(r.price_micros for r in groups[f]), -first[f]))
    voters = groups[best]
    return voters[0].answer or "", [r.agent_id for r in voters], len(voters) / sum(map(len, groups.values()))
