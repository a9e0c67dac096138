"""Comparing answers: normal forms per answer form, agreement of free text, voting, self-reported confidence,
chunking."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.protocol.messages import Tier
from accord.strategies import (
    Ask,
    CallRecord,
    StrategyConfigError,
    agrees,
    extract_choice,
    extract_number,
    majority,
    normalise,
    score_by_agreement,
    similarity,
)
from accord.strategies.answers import content_words
from accord.strategies.cascade import parse_confidence, strip_confidence
from accord.strategies.split import Split, chunk_text
from tests.support.votes import exact_vote


def _rec(answer: str | None, price: int = 0, agent: str = "a") -> CallRecord:
    return CallRecord(
        role="answer",
        tiers=(Tier.CLOUD,),
        max_price_micros=1000,
        agent_id=agent,
        price_micros=price,
        answer=answer,
        failure=None if answer is not None else "no_bids",
    )


# --- numbers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Natalia sold 48 clips in April and 24 in May.\n#### 1,234", "1234"),
        ("The answer is $42.00", "42"),
        ("so the total is \\boxed{7}.", "7"),
        ("Answer: 1,000.50 dollars", "1000.5"),
        ("the answer is -3.50", "-3.5"),
        ("She has 3 apples, then buys 5 more: 8", "8"),  # no marker: the last number
        ("The answer is 12. (It took 3 steps.)", "12"),  # the marked number beats a later one
        ("#### 5\n\nanswer is 6", "6"),  # several markers: the last
        ("3.0", "3"),
        ("100", "100"),
        ("2.50 kg", "2.5"),
        ("about .5 of it", "0.5"),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_number(text: str, number: str | None) -> None:
    assert extract_number(text) == number


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("(C)", "C"),
        ("Answer: b", "B"),
        ("The answer is C.", "C"),
        ("option A is wrong; the answer is (D)", "D"),
        ("B", "B"),
        ("  d) \n", "D"),
        ("Paris is the capital.", None),
        ("", None),
    ],
)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


def test_extract_choice_prefers_the_stated_answer_over_options_discussed_after_it() -> None:
    # How chat models answer multiple choice: the verdict first, then why the other options are wrong.
    assert extract_choice("The answer is (B). Option (A) is wrong because the rate is fixed.") == "B"
    assert extract_choice("Answer: C\nNote that (A) and (D) ignore friction.") == "C"


@pytest.mark.parametrize(
    ("text", "form", "normal"),
    [
        ("#### 1,234", "math", "1234"),
        ("The answer is $1234.00", "math", "1234"),
        ("\\boxed{1234}", "math", "1234"),
        ("I cannot tell", "math", "i cannot tell"),  # no number: the free-text form
        ("(C)", "mcq", "C"),
        ("Answer: c", "mcq", "C"),
        ("None of them.", "mcq", "none of them"),  # no letter: the free-text form
        ("  Paris,   France! ", "chat", "paris france"),
        ("PARIS france", "chat", "paris france"),
        ("The answer is 42", "chat", "the answer is 42"),  # chat form does not extract numbers
    ],
)
def test_normalise(text: str, form: str, normal: str) -> None:
    assert normalise(text, form) == normal


def test_normalise_ignores_the_confidence_line_a_cascade_asks_for() -> None:
    # SelfConfidence asks the first stage to end with "Confidence: N/10"; when that stage is an ensemble or a
    # debate, its answers are voted on with that line still in them, so the scale must not become the answer.
    assert normalise("Six times seven is 42.\nConfidence: 9/10", "math") == "42"
    assert normalise("The answer is (B)\nConfidence: 8/10", "mcq") == "B"
    votes = [_rec("41\nConfidence: 9/10"), _rec("42\nConfidence: 8/10"), _rec("42\nConfidence: 6/10")]
    winner = majority(votes, "math")
    assert winner is not None and normalise(winner.text, "math") == "42"
    assert winner.confidence == pytest.approx(2 / 3)


# --- majority ----------------------------------------------------------------------------------------------------
def test_majority_groups_by_normal_form_and_returns_the_first_full_text() -> None:
    records = [_rec("I think 41"), _rec("The answer is 42."), _rec("#### 42"), _rec(None), _rec("42")]
    winner = majority(records, "math")
    assert winner is not None
    assert winner.text == "The answer is 42."  # a vote never invents text: the first answer of its form
    assert [r.answer for r in winner.calls] == ["The answer is 42.", "#### 42", "42"]
    assert winner.confidence == pytest.approx(3 / 4)  # failed calls do not vote


def test_majority_tie_goes_to_the_better_paid_voters() -> None:
    records = [_rec("(A)", price=10), _rec("(B)", price=50), _rec("A", price=10), _rec("Answer: b", price=5)]
    winner = majority(records, "mcq")
    assert winner is not None
    assert normalise(winner.text, "mcq") == "B"  # 2 votes each; B's voters were paid 55, A's 20
    assert winner.confidence == pytest.approx(0.5)


def test_majority_tie_at_equal_pay_goes_to_the_earliest_answer() -> None:
    records = [_rec("cat", price=10), _rec("dog", price=10), _rec("Dog!", price=10), _rec("Cat.", price=10)]
    winner = majority(records)
    assert winner is not None and winner.text == "cat"
    swapped = majority([records[1], records[0], records[3], records[2]])
    assert swapped is not None and swapped.text == "dog"


def test_majority_of_nothing_is_none() -> None:
    assert majority([]) is None
    assert majority([_rec(None), _rec(None)]) is None


def test_majority_single_voter_has_full_confidence() -> None:
    winner = majority([_rec(None), _rec("7")], "math")
    assert winner is not None and winner.text == "7" and winner.confidence == 1.0


# --- free text: agreement by content words -----------------------------------------------------------------------
CAPITAL = "What is the capital of Italy?"


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        ("Rome", "The capital of Italy is Rome.", True),  # restating the question adds no claim
        ("Rome is the capital of Italy.", "The capital of Italy is Rome!", True),  # same words, another order
        ("The capital of Italy is Rome.", "The capital of Italy is Milan.", False),  # the words that differ decide
        ("Rome.", "It's Rome, a city of about 2.8 million people.", False),  # F1 1/3: the rest is another claim
        ("Rome, the Eternal City", "Rome (the Eternal City).", True),
        ("Yes, it is Rome.", "No, it is not Rome.", False),  # negations and yes/no are claims
        ("The capital of Italy.", "the capital of italy", True),  # no claim of its own: the same normal form
        ("The capital of Italy.", "Italy", False),
    ],
)
def test_free_text_answers_agree_on_their_content_words(a: str, b: str, agree: bool) -> None:
    assert agrees(a, b, "chat", CAPITAL) is agree
    assert agrees(b, a, "chat", CAPITAL) is agree  # symmetric
    assert similarity(a, a, "chat", CAPITAL) == 1.0


def test_exact_forms_agree_only_on_equal_normal_forms() -> None:
    assert agrees("The answer is 42.", "#### 42", "math") and not agrees("42", "42.5", "math")
    assert similarity("(B)", "Answer: b", "mcq") == 1.0 and similarity("(B)", "(C)", "mcq") == 0.0


def test_content_words_drop_function_words_and_the_question() -> None:
    assert content_words("The capital of Italy is Rome, isn't it?", CAPITAL) == Counter({"rome": 1, "isnt": 1})
    assert content_words("Not Rome: Milan.") == Counter({"not": 1, "rome": 1, "milan": 1})
    assert content_words("Rome.\nConfidence: 9/10", CAPITAL) == Counter({"rome": 1})  # a cascade's scale


def test_free_text_vote_picks_the_answer_most_others_agree_with() -> None:
    # Seen in the demo: three differently worded answers used to tie at one vote each, and the tie went to the
    # best-paid one, which was wrong. Two of them say Rome and agree; the paid one says something else.
    records = [
        _rec('italy The answer is indeed "Italy".', price=3, agent="edge"),
        _rec("Rome is the capital city of Italy, a city of about 2.8 million people.", agent="phone"),
        _rec('The capital of Italy is Rome, not "Italy".', agent="laptop"),
        _rec("It is the city of Rome.", agent="watch"),
    ]
    winner = majority(records, "chat", CAPITAL)
    assert winner is not None
    assert winner.text == "It is the city of Rome."  # the medoid: it agrees with both other Rome answers
    assert [r.agent_id for r in winner.calls] == ["phone", "laptop", "watch"]
    assert winner.confidence == pytest.approx(3 / 4)


def test_free_text_vote_without_the_question_still_compares_content_words() -> None:
    records = [_rec("Paris, France."), _rec("It is Paris"), _rec("Lyon")]
    winner = majority(records)
    assert winner is not None and winner.text == "Paris, France."  # "paris france" and "paris": F1 2/3
    assert winner.confidence == pytest.approx(2 / 3)


def test_free_text_vote_with_no_agreement_goes_to_the_most_similar_then_the_best_paid() -> None:
    alone = [_rec("Rome", price=1), _rec("Milan", price=5), _rec("Naples", price=2)]
    winner = majority(alone, "chat", CAPITAL)
    assert winner is not None and winner.text == "Milan" and winner.confidence == pytest.approx(1 / 3)
    # No two agree, but one shares a word with each of the others: it is the most central answer.
    central = [_rec("Rome, of course", price=9), _rec("Rome or Milan"), _rec("Milan probably")]
    winner = majority(central, "chat", CAPITAL)
    assert winner is not None and winner.text == "Rome or Milan"


@dataclass
class _Signals:
    """Stands in for the requester: records the quality signals a run gives its answers."""

    got: list[tuple[str, float, str]] = field(default_factory=list)

    def record_quality(
        self, task_id: str, agent_id: str, quality: float, source: str, *, run_id: str = ""
    ) -> None:
        self.got.append((agent_id, quality, source))


def test_free_text_answers_are_scored_by_agreement_with_the_final_answer() -> None:
    calls = [
        replace(_rec("Rome, the capital.", agent="a"), task_id="t1"),
        replace(_rec("The capital of Italy is Rome", agent="b"), task_id="t2"),
        replace(_rec("Milan", agent="c"), task_id="t3"),
    ]
    signals = _Signals()
    scored = score_by_agreement(cast(Any, signals), calls, "Rome", "chat", run_id="r", question=CAPITAL)
    assert scored == 3 and signals.got == [("a", 1.0, "vote"), ("b", 1.0, "vote"), ("c", 0.0, "vote")]
    debated = _Signals()
    rounds = [replace(c, role=f"debate{n}") for n in (1, 2) for c in calls]  # round two saw round one
    score_by_agreement(cast(Any, debated), rounds, "Rome", "chat", run_id="r", question=CAPITAL)
    assert debated.got == signals.got
    judged = _Signals()
    judge = replace(_rec("Best: 3", agent="j"), task_id="t4", role="judge")
    score_by_agreement(cast(Any, judged), [*calls, judge], "Milan", "chat", run_id="r", question=CAPITAL)
    assert judged.got == [("a", 0.0, "judge"), ("b", 0.0, "judge"), ("c", 1.0, "judge")]


@given(
    st.sampled_from(["math", "mcq"]),
    st.lists(
        st.tuples(
            st.sampled_from(["42", "#### 42", "41", "(B)", "Answer: b", "C", "none", "None.", None]),
            st.integers(0, 3),
        ),
        max_size=9,
    ),
)
def test_exact_form_vote_follows_the_stated_rule(form: str, votes: list[tuple[str | None, int]]) -> None:
    records = [_rec(a, price=p, agent=f"agent{i}") for i, (a, p) in enumerate(votes)]
    winner = majority(records, form)
    expected = exact_vote(records, form)
    if expected is None:
        assert winner is None
        return
    assert winner is not None
    assert (winner.text, [r.agent_id for r in winner.calls], winner.confidence) == expected


_claims = st.lists(st.sampled_from(["rome", "milan", "not", "city", "capital", "the", "is", "Italy", "yes"]))


@given(st.lists(st.tuples(_claims, st.integers(0, 3)), min_size=1, max_size=7))
def test_free_text_vote_returns_an_answer_and_exactly_those_that_agree_with_it(
    votes: list[tuple[list[str], int]],
) -> None:
    records = [_rec(" ".join(words), price=p, agent=f"agent{i}") for i, (words, p) in enumerate(votes)]
    winner = majority(records, "chat", CAPITAL)
    assert winner is not None
    assert winner.text in [r.answer for r in records]  # a vote never invents text
    backers = [r for r in records if agrees(winner.text, r.answer or "", "chat", CAPITAL)]
    assert list(winner.calls) == backers and winner.confidence == pytest.approx(len(backers) / len(records))
    for r in records:  # no answer has more agreeing answers than the winner
        assert sum(agrees(r.answer or "", o.answer or "", "chat", CAPITAL) for o in records) <= len(backers)


# --- confidence --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42\nConfidence: 7/10", 0.7),
        ("confidence=85/100", 0.85),
        ("Confidence: 0.8", 0.8),
        ("Confidence: 8", 0.8),  # no scale and above 1: out of 10
        ("Confidence: 12/10", 1.0),  # clamped
        ("Confidence: 2/10 ... on reflection, Confidence: 9/10", 0.9),  # the last one
        ("I am fairly sure.", None),
    ],
)
def test_parse_confidence(text: str, value: float | None) -> None:
    got = parse_confidence(text)
    assert got == (pytest.approx(value) if value is not None else None)


def test_parse_confidence_reads_percentages() -> None:
    # "Confidence: 30%" is a low confidence; read as 30/10 and clamped it would never escalate.
    assert parse_confidence("42\nConfidence: 30%") == pytest.approx(0.3)
    assert parse_confidence("Confidence: 95 %") == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("42\nConfidence: 9/10", "42"),
        ("First line.\n\nSecond line.\nconfidence: 3/10\n", "First line.\n\nSecond line."),
        ("Confidence: 9/10", "Confidence: 9/10"),  # nothing else: keep the text rather than return nothing
        ("No confidence line here", "No confidence line here"),
        ("Confidence: 5/10\n42", "Confidence: 5/10\n42"),  # only a LAST line is stripped
    ],
)
def test_strip_confidence(text: str, stripped: str) -> None:
    assert strip_confidence(text) == stripped


# --- chunks ------------------------------------------------------------------------------------------------------
def test_chunk_text_cuts_at_paragraphs_and_keeps_every_word() -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 30 for i in range(6))
    chunks = chunk_text(text, 400)
    assert len(chunks) > 1
    assert all(len(c) <= 400 for c in chunks)
    assert all(c.startswith("Paragraph") for c in chunks)  # cut at paragraph ends
    assert " ".join(" ".join(chunks).split()) == " ".join(text.split())


def test_chunk_text_without_breaks_cuts_at_the_size() -> None:
    assert chunk_text("x" * 50, 20) == ["x" * 20, "x" * 20, "x" * 10]
    assert chunk_text("  short  ", 20) == ["short"]
    assert chunk_text("   ", 20) == []


@given(st.text(alphabet=st.sampled_from("ab .\n"), max_size=400), st.integers(min_value=8, max_value=120))
def test_chunk_text_bounds_and_content(text: str, size: int) -> None:
    chunks = chunk_text(text, size)
    assert all(0 < len(c) <= size for c in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())  # nothing lost, nothing added


# --- properties --------------------------------------------------------------------------------------------------
_words = st.text(alphabet=st.sampled_from("abcdefghij klmnopqrstuvwxyz,.!?\n"), max_size=40)
_numbers = st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False, allow_infinity=False)
_markers = st.sampled_from(["", "#### ", "The answer is ", "answer: ", "\\boxed{", "The answer is $"])


@given(_words, _markers, _numbers, _words)
def test_normalise_math_is_idempotent_and_reads_the_number(
    before: str, marker: str, number: object, after: str
) -> None:
    text = f"{before} {marker}{number}{'}' if marker == chr(92) + 'boxed{' else ''} {after}"
    normal = normalise(text, "math")
    assert normalise(normal, "math") == normal
    if marker:  # a marked number is the answer, whatever text follows (the filler has no digits)
        assert normal == normalise(str(number), "math")


_letters = st.sampled_from("ABCDEFGHIJabcdefghij")
_mcq = st.sampled_from(["({})", "Answer: {}", "The answer is {}.", "{}", "answer is ({})", "Option {}"])


@given(_mcq, _letters)
def test_normalise_mcq_is_idempotent(template: str, letter: str) -> None:
    normal = normalise(template.format(letter), "mcq")
    assert normal == letter.upper()
    assert normalise(normal, "mcq") == normal


@given(st.text(max_size=60))
def test_normalise_chat_is_idempotent(text: str) -> None:
    normal = normalise(text)
    assert normalise(normal) == normal


@given(
    st.lists(
        st.tuples(st.sampled_from(["42", "#### 42", "41", "The answer is 40", "forty", None]), st.integers(0, 50)),
        max_size=9,
    )
)
def test_majority_winner_has_the_most_votes(votes: list[tuple[str | None, int]]) -> None:
    records = [_rec(a, price=p, agent=f"agent{i}") for i, (a, p) in enumerate(votes)]
    counts = Counter(normalise(r.answer, "math") for r in records if r.answer is not None)
    winner = majority(records, "math")
    if not counts:
        assert winner is None
        return
    assert winner is not None
    form = normalise(winner.text, "math")
    assert counts[form] == max(counts.values())
    assert len(winner.calls) == counts[form]
    assert all(normalise(r.answer or "", "math") == form for r in winner.calls)
    assert winner.confidence == pytest.approx(counts[form] / sum(counts.values()))
    assert winner.text == winner.calls[0].answer


@pytest.mark.asyncio
async def test_split_refuses_a_context_it_would_cut() -> None:
    """A10: `--context-file` is never read only in part: a context longer than the chunks split reads is refused
    before any call (before: the first max_chunks * chunk_chars characters, silently)."""
    context = "\n\n".join(f"Paragraph {i}. " + "x" * 1900 for i in range(9))  # 9 chunks of ~2000
    with pytest.raises(StrategyConfigError, match="9 chunks"):
        await Split().run(Ask("Summarise.", context=context), cast(Any, None))
