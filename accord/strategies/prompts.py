"""The notes strategies add to a stage's system message. The user message always stays the question itself, so
any agent (a replay of recorded answers included) sees the same question at every stage."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CONFIDENCE_INSTRUCTION",
    "aggregate_notes",
    "debate_notes",
    "draft_notes",
    "extract_ask",
    "judge_prompt",
    "select_prompt",
    "split_notes",
]

CONFIDENCE_INSTRUCTION = (
    "After your answer, on its own last line, write 'Confidence: N/10', where N is how sure you are that your "
    "answer is correct."
)


def _numbered(answers: Sequence[str]) -> str:
    return "\n\n".join(f"Response {i}:\n{a.strip()}" for i, a in enumerate(answers, 1))


def draft_notes(draft: str) -> str:
    """For a cascade's escalation: the cheaper tier's answer as context (FrugalGPT / AutoMix style)."""
    return (
        "A smaller model drafted the answer below. Check it: keep what is right, fix what is wrong, and give your "
        f"own final answer.\n\nDraft:\n{draft.strip()}"
    )


def aggregate_notes(answers: Sequence[str]) -> str:
    """Mixture-of-agents' aggregate-and-synthesize note (Wang et al., 2024)."""
    return (
        "You have been provided with a set of responses from various models to the latest user query. "
        "Synthesize them into a single, high-quality response. Critically evaluate the information, recognising "
        "that some of it may be biased or incorrect; do not simply copy the given answers.\n\n"
        + _numbered(answers)
    )


def debate_notes(own: str | None, others: Sequence[str]) -> str:
    """A debater's note for the next round (Du et al., 2023): the other agents' previous answers."""
    mine = f"Your previous answer:\n{own.strip()}\n\n" if own else ""
    return (
        f"{mine}These are the answers other agents gave to the question:\n\n{_numbered(others)}\n\n"
        "Using their reasoning as additional advice, give an updated answer."
    )


def split_notes(extracts: Sequence[str]) -> str:
    """What the remote model sees of private context: only the local extracts (Minions, Narayan et al., 2025)."""
    return (
        "A local assistant read private material you cannot see and extracted the facts relevant to the "
        f"question:\n\n{_numbered(extracts)}\n\nAnswer the question from these facts."
    )


def extract_ask(question: str, chunk: str) -> str:
    """The device's extraction prompt over one chunk of private context."""
    return (
        f"Document:\n{chunk.strip()}\n\nFrom the document above, list only the facts needed to answer this "
        f"question, briefly, without copying anything else: {question.strip()}"
    )


def judge_prompt(question: str, answer: str) -> str:
    """A judge task: is this answer right? (reply parsed by the judge verifier)."""
    return (
        f"Question:\n{question.strip()}\n\nProposed answer:\n{answer.strip()}\n\n"
        "Is the proposed answer correct? Reply with a score from 0 (certainly wrong) to 10 (certainly right) as "
        "'Score: N', then one sentence why."
    )


def select_prompt(question: str, answers: Sequence[str]) -> str:
    """An ensemble judge task: pick the best of numbered answers (reply parsed as 'Best: N')."""
    return (
        f"Question:\n{question.strip()}\n\n{_numbered(answers)}\n\n"
        "Which response answers the question best? Reply 'Best: N' with its number, then one sentence why."
    )
