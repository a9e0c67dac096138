"""A strategy as a task handler: a Backend that answers each task by running a strategy over the mesh.

An agent whose model is a :class:`StrategyBackend` is a gateway: it bids for tasks like any agent, and when it
wins one it runs its strategy (a cascade, an ensemble, ...) through its own requester, then returns the combined
answer as its signed, attested result. To the requester that awarded the task the whole strategy is one agent
with one price; the gateway's price sheet must cover what its strategy spends (each run may spend at most
``budget_micros``), and the strategy's deadline is the time the agent gives it (its lease) less a margin
(``margin_ms``, at most a fifth of that time) so the gateway can still deliver its result in time. Advertise a
latency that covers the strategy's rounds (bid windows included), or the leases will be too short.

The gateway's requester must run under an identity of its own (the agent's inbox and the requester's inbox are
different subjects only for different ids), and ``requester.run`` must be started before the agent takes tasks.
"""

from __future__ import annotations

import time

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    DeltaCallback,
    elapsed_ms,
)
from accord.protocol.messages import Role, Timings, Usage
from accord.runtime.requester import Requester
from accord.strategies.base import DEFAULT_SYSTEM, Ask, Strategy, StrategyFailed
from accord.strategies.run import run_strategy

__all__ = ["StrategyBackend"]


class StrategyBackend:
    """Answers with ``strategy`` run through ``requester`` (see the module docstring)."""

    def __init__(
        self,
        requester: Requester,
        strategy: Strategy,
        *,
        budget_micros: int,
        form: str = "chat",
        margin_ms: int = 300,
        default_deadline_ms: int = 30_000,
    ) -> None:
        self.requester = requester
        self.strategy = strategy
        self.budget_micros = budget_micros
        self.form = form
        self.margin_ms = margin_ms
        self.default_deadline_ms = default_deadline_ms

    @property
    def name(self) -> str:
        return "strategy"

    @property
    def model(self) -> str:
        return f"strategy-{self.strategy.name}"

    async def aclose(self) -> None:
        return None

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        started = time.monotonic_ns()
        now = time.time_ns()
        deadline = request.effective_deadline_ns(now)
        deadline_ms = self.default_deadline_ms if deadline is None else (deadline - now) // 1_000_000
        deadline_ms -= min(self.margin_ms, deadline_ms // 5)
        if deadline_ms <= 0:
            raise BackendError(BackendErrorReason.TIMEOUT, "no time left to run the strategy", backend=self.name)
        system = next((m.content for m in request.messages if m.role is Role.SYSTEM), DEFAULT_SYSTEM)
        ask = Ask(prompt=request.prompt, system=system, form=self.form, max_output_tokens=request.max_tokens)
        try:
            result = await run_strategy(
                self.requester, self.strategy, ask, budget_micros=self.budget_micros, deadline_ms=deadline_ms
            )
        except StrategyFailed as exc:
            reason = BackendErrorReason.TIMEOUT if exc.reason == "deadline" else BackendErrorReason.INTERNAL
            raise BackendError(reason, str(exc), backend=self.name) from exc
        usage = Usage(
            input_tokens=sum(c.outcome.result.usage.input_tokens for c in result.calls if c.outcome),
            output_tokens=sum(c.outcome.result.usage.output_tokens for c in result.calls if c.outcome),
        )
        return Completion(
            text=result.answer,
            model=self.model,
            usage=usage,
            timings=Timings(total_ms=elapsed_ms(started, time.monotonic_ns())),
            backend=self.name,
            cost_micros=result.spent_micros,
            metadata={
                "calls": len(result.calls),
                "answered_by": ",".join(result.answered_by),
                "stopped": result.stopped or "",
            },
        )
