"""The HTTP API: OpenAI's chat-completions endpoints in front of a running mesh (Starlette, served by uvicorn).

- ``POST /v1/chat/completions``: ``model`` is an advertised model (one market task, among the agents that
  serve it) or a strategy as a virtual model (``accord/route``, ``accord/cascade``, ``accord/ensemble``, any
  kind or ``KIND:key=value,...``, and the mesh file's named strategies as ``accord/NAME``; ``accord`` alone is
  the mesh's default strategy). ``stream: true`` answers with server-sent events built from the winner's
  Progress frames. Every response carries ``accord``: agent, model, price, latency and the attestation (inline,
  and by id at ``GET /v1/attestations/{id}``, byte for byte what ``accord verify`` checks).
- ``GET /v1/models``: the advertised models, then the strategies.
- Errors in OpenAI's shape (:mod:`accord.httpapi.errors`), with ``x-should-retry: false``: retrying the same
  request would meet the same mesh.

The deadline of a request counts from its first announce: the wait for an agent that could take it (at most
``wait_ms``) comes before it.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from accord.errors import AccordError
from accord.httpapi.account import answer_json, main_outcome
from accord.httpapi.errors import ApiError, api_error
from accord.httpapi.keys import Caller, Callers
from accord.httpapi.wire import ChatRequest, chunk, completion, decode_request, error_event, to_messages
from accord.logs import get_logger
from accord.mesh.discovery import await_candidates, discover
from accord.protocol.messages import ChatMessage, Constraints, Progress, Role
from accord.protocol.pricing import estimate_prompt_tokens
from accord.protocol.requester import TaskSpec
from accord.runtime.requester import TaskOutcome, check_frame_size
from accord.runtime.timers import now_ns
from accord.strategies import (
    DEFAULT_SYSTEM,
    STRATEGY_KINDS,
    Ask,
    Strategy,
    StrategyConfigError,
    StrategyResult,
    StrategySpec,
    build_strategy,
    parse_strategy_option,
    run_strategy,
)
from accord.strategies.parsing import SingleSpec

__all__ = ["ApiSettings", "MeshApi"]

log = get_logger(__name__)

_NO_RETRY = {"x-should-retry": "false"}
_MAX_BODY = 16 * 1024 * 1024
_VIRTUAL = ("route", "cascade", "ensemble", "single", "moa", "debate", "split")
"""Strategy kinds listed as virtual models, in this order (the first three are the ones a caller wants most)."""


@dataclass(frozen=True)
class ApiSettings:
    default_budget_micros: int = 100_000
    """A request's budget when it names none (``budget_micros`` / ``max_price_micros``)."""
    default_deadline_ms: int = 30_000
    default_max_tokens: int = 256
    wait_ms: int = 2_000
    """How long a request waits for an agent that could take it (agents that start later), before its deadline
    starts."""
    strategies: Mapping[str, StrategySpec] = field(default_factory=dict)
    """The mesh file's named strategies (``accord/NAME``)."""
    default_strategy: str | None = None
    """What ``model: "accord"`` runs (the mesh file's ``strategy``; default ``single``)."""
    max_attestations: int = 10_000
    """Attestations kept for ``GET /v1/attestations/{id}`` (the oldest go first)."""


@dataclass(frozen=True)
class _Target:
    """What a ``model`` names: a strategy, or the agents that serve an advertised model."""

    name: str
    strategy: Strategy | None = None
    served: str | None = None


@dataclass
class _Run:
    """One request's market run, as the response reports it."""

    answer: str
    main: TaskOutcome
    outcomes: list[TaskOutcome]
    spent_micros: int
    budget_micros: int
    result: StrategyResult | None = None


class MeshApi:
    """The API over the callers' requesters (one per API key, all on one bus). Start :meth:`run` in a task
    group, then serve :meth:`app` (:func:`serve_http`)."""

    def __init__(self, callers: Callers, settings: ApiSettings | None = None) -> None:
        self.callers = callers
        self.settings = settings if settings is not None else ApiSettings()
        self._attestations: OrderedDict[str, bytes] = OrderedDict()
        self._tg: TaskGroup | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run every caller's requester and learn the mesh (a service PING) until cancelled."""
        async with anyio.create_task_group() as tg:
            for caller in self.callers.all():
                await tg.start(caller.requester.run)
            await discover(self.callers.all()[0].requester)
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/attestations/{attestation_id}", self._attestation, methods=["GET"]),
            ]
        )

    # --- endpoints ----------------------------------------------------------------------------------------------
    async def _models(self, request: Request) -> Response:
        try:
            self.callers.find(request.headers.get("authorization"))
        except ApiError as exc:
            return _error_response(exc)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "accord-mesh"} for m in self._served()]
        virtual = [f"accord/{kind}" for kind in _VIRTUAL if kind in STRATEGY_KINDS]
        virtual += [f"accord/{name}" for name in sorted(self.settings.strategies)]
        data += [{"id": v, "object": "model", "created": 0, "owned_by": "accord-strategy"} for v in virtual]
        return JSONResponse({"object": "list", "data": data})

    async def _attestation(self, request: Request) -> Response:
        envelope = self._attestations.get(request.path_params["attestation_id"])
        if envelope is None:
            return _error_response(ApiError(404, "invalid_request_error", "not_found", "no such attestation"))
        return Response(envelope, media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        try:
            caller = self.callers.find(request.headers.get("authorization"))
            body = await request.body()
            if len(body) > _MAX_BODY:
                raise ApiError(413, "invalid_request_error", "payload_too_large", "the request body is too large")
            chat = decode_request(body)
            target = self._target(chat.model)
            messages = to_messages(chat)
            if chat.stream:
                return await self._stream(caller, chat, target, messages)
            run = await self._execute(caller, chat, target, messages, None)
        except ApiError as exc:
            return _error_response(exc)
        except AccordError as exc:
            return _error_response(api_error(exc))
        usage = _usage(run.outcomes)
        return JSONResponse(
            completion(
                id_=f"chatcmpl-{run.main.task_id}",
                model=target.name if target.strategy is not None else run.main.model,
                answer=run.answer,
                usage=usage,
                accord=self._account(run, inline=True),
            )
        )

    # --- one request through the market -------------------------------------------------------------------------
    def _served(self) -> list[str]:
        requester = self.callers.all()[0].requester
        return sorted({m.name for e in requester.registry.live(now=now_ns()) for m in e.advert.models})

    def _target(self, model: str) -> _Target:
        if model == "accord" or model.startswith("accord/"):
            text = model.partition("/")[2] or self.settings.default_strategy or "single"
            try:
                spec = parse_strategy_option(text, dict(self.settings.strategies))
                return _Target(model, strategy=build_strategy(spec))
            except StrategyConfigError as exc:
                raise ApiError(404, "invalid_request_error", "model_not_found", str(exc), "model") from exc
        if model not in self._served():
            raise ApiError(
                404,
                "invalid_request_error",
                "model_not_found",
                f"no agent on the mesh advertises model {model!r} (GET /v1/models lists them)",
                "model",
            )
        return _Target(model, served=model)

    async def _execute(
        self,
        caller: Caller,
        chat: ChatRequest,
        target: _Target,
        messages: list[ChatMessage],
        on_progress: Callable[[Progress], None] | None,
    ) -> _Run:
        settings = self.settings
        asked = [b for b in (chat.budget_micros, chat.max_price_micros) if b is not None]
        budget = caller.reserve(min(asked) if asked else settings.default_budget_micros)
        deadline_ms = chat.deadline_ms or settings.default_deadline_ms
        max_tokens = chat.output_tokens or settings.default_max_tokens
        spent = 0
        try:
            spec = TaskSpec(
                messages=messages,
                constraints=_constraints(chat, deadline_ms, budget, tiers=target.strategy is None),
                max_output_tokens=max_tokens,
                est_input_tokens=estimate_prompt_tokens(messages),
            )
            check_frame_size(spec)  # too large for a frame: 413 now, not after the wait
            requester = caller.requester
            serving: set[str] | None = None
            if target.served is not None:
                serving = {
                    e.advert.sender
                    for e in requester.registry.live(now=now_ns())
                    if any(m.name == target.served for m in e.advert.models)
                }
            await await_candidates(requester, spec, timeout_ms=settings.wait_ms, among=serving)
            if target.strategy is None:
                avoid = {e.advert.sender for e in requester.registry.live(now=now_ns())} - (serving or set())
                fresh = msgspec.structs.replace(  # the deadline counts from the announce
                    spec.constraints, deadline_ns=now_ns() + deadline_ms * 1_000_000
                )
                outcome = await requester.submit(
                    msgspec.structs.replace(spec, constraints=fresh), on_progress=on_progress, avoid=avoid
                )
                spent = outcome.price_micros
                run = _Run(outcome.answer, outcome, [outcome], spent, budget)
            else:
                result = await run_strategy(
                    requester,
                    _with_tiers(target.strategy, chat),
                    _ask(chat, messages, max_tokens),
                    budget_micros=budget,
                    deadline_ms=deadline_ms,
                )
                spent = result.spent_micros
                run = _strategy_run(result)
        except BaseException as exc:
            calls = getattr(exc, "calls", ())
            spent = sum(c.price_micros for c in calls if c.ok)
            raise
        finally:
            caller.settle(budget, spent)
        for outcome in run.outcomes:
            self._remember(outcome)
        log.info(
            "api.answered",
            caller=caller.name,
            model=chat.model,
            agent=run.main.agent_id,
            spent_micros=run.spent_micros,
        )
        return run

    def _remember(self, outcome: TaskOutcome) -> None:
        self._attestations[outcome.task_id] = outcome.result.attestation
        while len(self._attestations) > self.settings.max_attestations:
            self._attestations.popitem(last=False)

    def _account(self, run: _Run, *, inline: bool) -> dict[str, object]:
        """The ``accord`` object: who answered, at what price, and the attestation (inline and by id)."""
        account = answer_json(run.answer, run.main, run.result)
        del account["answer"]
        if not inline:
            del account["attestation"]
        account["spent_micros"] = run.spent_micros
        account["budget_micros"] = run.budget_micros
        return account

    # --- streaming ----------------------------------------------------------------------------------------------
    async def _stream(
        self, caller: Caller, chat: ChatRequest, target: _Target, messages: list[ChatMessage]
    ) -> Response:
        """Server-sent events. The response starts with the first delta (or the answer): a request that fails
        before any output still gets its HTTP error status."""
        assert self._tg is not None, "MeshApi.run must be running"
        send, receive = anyio.create_memory_object_stream[Progress | _Run | AccordError](4096)
        scope = anyio.CancelScope()

        def on_progress(progress: Progress) -> None:
            try:
                send.send_nowait(progress)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # a missed delta is sent with the final answer

        async def work() -> None:
            with scope:
                async with send:
                    try:
                        item: _Run | AccordError = await self._execute(caller, chat, target, messages, on_progress)
                    except AccordError as exc:
                        item = exc
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await send.send(item)

        self._tg.start_soon(work)
        try:
            first = await receive.receive()
        except anyio.EndOfStream:
            first = ApiError(500, "api_error", "internal", "the request ended without an answer")
        if isinstance(first, AccordError):
            receive.close()
            return _error_response(first if isinstance(first, ApiError) else api_error(first))
        return StreamingResponse(
            self._events(chat, target, first, receive, scope),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache"},
        )

    async def _events(
        self,
        chat: ChatRequest,
        target: _Target,
        first: Progress | _Run,
        receive: MemoryObjectReceiveStream[Progress | _Run | AccordError],
        scope: anyio.CancelScope,
    ) -> AsyncIterator[bytes]:
        id_ = f"chatcmpl-{first.task_id if isinstance(first, Progress) else first.main.task_id}"
        model = target.name
        streamed = ""
        attempt: int | None = None
        try:
            yield chunk(id_=id_, model=model, delta={"role": "assistant", "content": ""})
            item: Progress | _Run | AccordError = first
            while True:
                if isinstance(item, Progress):
                    if attempt is None:
                        attempt = item.attempt
                    if item.attempt == attempt and item.delta:  # a later attempt would repeat the text
                        streamed += item.delta
                        yield chunk(id_=id_, model=model, delta={"content": item.delta})
                elif isinstance(item, _Run):
                    if not item.answer.startswith(streamed):
                        yield error_event(
                            ApiError(502, "api_error", "stream_diverged", "the task was re-awarded mid-stream")
                        )
                        return
                    rest = item.answer[len(streamed) :]
                    if rest:
                        yield chunk(id_=id_, model=model, delta={"content": rest})
                    usage = _usage(item.outcomes)
                    include = chat.stream_options is not None and chat.stream_options.include_usage
                    yield chunk(
                        id_=id_,
                        model=model if target.strategy is not None else item.main.model,
                        delta={},
                        finish="stop",
                        usage=usage if include else None,
                        accord=self._account(item, inline=True),
                    )
                    yield b"data: [DONE]\n\n"
                    return
                else:
                    yield error_event(item if isinstance(item, ApiError) else api_error(item))
                    return
                item = await receive.receive()
        except anyio.EndOfStream:
            return
        finally:
            scope.cancel()  # the client left: the task is cancelled (a Cancel goes to the awardee)
            receive.close()


def _constraints(chat: ChatRequest, deadline_ms: int, budget: int, *, tiers: bool) -> Constraints:
    return Constraints(
        deadline_ns=now_ns() + deadline_ms * 1_000_000,
        max_price_micros=budget,
        min_quality=chat.min_quality,
        residency=chat.residency,
        privacy=chat.privacy,
        preferred_tiers=chat.tiers if tiers else [],
    )


def _with_tiers(strategy: Strategy, chat: ChatRequest) -> Strategy:
    """``tier`` narrows a single-call strategy to those tiers; other strategies pick their tiers themselves."""
    if chat.tiers and strategy.name == "single":
        return build_strategy(SingleSpec(tiers=chat.tiers))
    return strategy


def _ask(chat: ChatRequest, messages: Sequence[ChatMessage], max_tokens: int) -> Ask:
    """A strategy's question: the last user message; system messages as its system prompt; earlier turns as
    notes (strategies answer one question)."""
    last = max(i for i, m in enumerate(messages) if m.role is Role.USER)
    system = "\n\n".join(m.content for m in messages if m.role is Role.SYSTEM) or DEFAULT_SYSTEM
    earlier = [m for m in messages[:last] if m.role is not Role.SYSTEM]
    history = "\n".join(f"{m.role.value}: {m.content}" for m in earlier)
    notes = f"Conversation so far:\n{history}" if earlier else None
    return Ask(
        prompt=messages[last].content,
        system=system,
        notes=notes,
        form=chat.form,
        max_output_tokens=max_tokens,
        residency=chat.residency,
        privacy=chat.privacy,
    )


def _strategy_run(result: StrategyResult) -> _Run:
    main = main_outcome(result)
    if main is None:  # pragma: no cover - run_strategy raises StrategyFailed instead
        raise ApiError(502, "api_error", "no_answer", f"strategy {result.strategy} returned no answered call")
    outcomes = [c.outcome for c in result.calls if c.ok and c.outcome is not None]
    return _Run(result.answer, main, outcomes, result.spent_micros, result.budget_micros, result)


def _usage(outcomes: Sequence[TaskOutcome]) -> tuple[int, int]:
    usages = [o.attestation.statement.usage for o in outcomes]
    return sum(u.input_tokens for u in usages), sum(u.output_tokens for u in usages)


def _error_response(error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=_NO_RETRY)
