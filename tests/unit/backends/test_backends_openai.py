"""The OpenAI-compatible backend against a tiny real HTTP server (stdlib, in a thread) that replays a script.

The server is real (sockets, HTTP/1.0, server-sent events); only its answers are scripted, so retries, backoff
bounds and error mapping can be checked exactly. The backend against a real model server is in
tests/integration/test_backend_openai.py.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from structlog.testing import capture_logs

from accord.backends import BackendError, BackendErrorReason, CompletionRequest, Delta, OpenAIBackend
from accord.backends.openai import _error_text, _retry_after


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[str] | None = None
    """SSE ``data:`` payloads, each sent as its own event."""
    delay_s: float = 0.0
    drop: bool = False
    """Close the connection without answering."""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, object]


class ScriptedServer:
    """Answers POSTs with the next scripted :class:`Reply` (500 once the script runs out)."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.in_flight = 0
        """Requests received whose answer has not begun. A client that waits for each answer before it sends the
        next never has two: counting until the last byte is written would race with the client reading it."""
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.requests.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    reply = outer.replies.popleft() if outer.replies else Reply(status=500, body=b"script ended")
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    time.sleep(reply.delay_s)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
                    self._answer(reply)

            def _answer(self, reply: Reply) -> None:
                if reply.drop:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.events is not None:
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for data in reply.events:
                        self.wfile.write(f"data: {data}\n\n".encode())
                        self.wfile.flush()
                else:
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: object, client_address: object) -> None:
                return None

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def chunk(content: str | None = None, *, finish: str | None = None, usage: tuple[int, int] | None = None) -> str:
    body: dict[str, object] = {"object": "chat.completion.chunk", "model": "served-name", "choices": []}
    if content is not None or finish is not None:
        delta = {"content": content} if content is not None else {}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return json.dumps(body)


def stream(*pieces: str, usage: tuple[int, int] | None = (11, 2), finish: str = "stop") -> Reply:
    events = [chunk(p) for p in pieces] + [chunk(finish=finish)]
    if usage is not None:
        events.append(chunk(usage=usage))
    return Reply(events=[*events, "[DONE]"])


def error(status: int, message: str, kind: str = "invalid_request_error", **headers: str) -> Reply:
    body = json.dumps({"error": {"code": status, "message": message, "type": kind}}).encode()
    return Reply(status=status, body=body, headers=headers)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    try:
        yield scripted
    finally:
        scripted.close()


def backend(server: ScriptedServer, **options: object) -> OpenAIBackend:
    settings: dict[str, object] = {
        "model": "test-model",
        "backoff_base_ms": 1,
        "backoff_max_ms": 4,
        "rng": random.Random(7),
        **options,
    }
    return OpenAIBackend(server.url, **settings)  # type: ignore[arg-type]


REQUEST = CompletionRequest.from_prompt("Say hello.", system="Be brief.", max_tokens=16)


# --- success paths ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_streams_deltas_and_reads_usage_from_the_final_chunk(server: ScriptedServer) -> None:
    server.script(stream("Hel", "lo", "!", usage=(11, 3)))
    deltas: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        deltas.append(delta)

    async with backend(server, api_key="sk-test") as b:
        request = CompletionRequest.from_prompt("Say hello.", max_tokens=16, temperature=0.5, stop=("\n",), seed=3)
        result = await b.complete(request, on_delta=on_delta)
    assert result.text == "Hello!"
    assert [d.text for d in deltas] == ["Hel", "lo", "!"]
    assert [d.seq for d in deltas] == [0, 1, 2]
    assert result.usage.input_tokens == 11
    assert result.usage.output_tokens == 3
    assert not result.usage_estimated
    assert result.finish_reason == "stop"
    assert result.model == "test-model"
    assert result.metadata["served_model"] == "served-name"
    assert result.backend == "openai"
    seen = server.requests[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.body == {
        "model": "test-model",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "temperature": 0.5,
        "stop": ["\n"],
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.asyncio
async def test_without_usage_the_counts_are_estimated(server: ScriptedServer) -> None:
    server.script(stream("a", "b", "c", "d", usage=None, finish="length"))
    async with backend(server) as b:
        result = await b.complete(REQUEST)
    assert result.text == "abcd"
    assert result.usage_estimated
    assert result.usage.output_tokens == 4  # one per content chunk
    assert result.usage.input_tokens > 0
    assert result.finish_reason == "length"


@pytest.mark.asyncio
async def test_a_server_rejecting_stream_options_is_asked_again_without(server: ScriptedServer) -> None:
    server.script(error(400, "unknown field: stream_options"), stream("ok", usage=None), stream("ok", usage=None))
    async with backend(server) as b:
        first = await b.complete(REQUEST)
        second = await b.complete(REQUEST)
    assert first.text == second.text == "ok"
    assert "stream_options" in server.requests[0].body
    assert "stream_options" not in server.requests[1].body
    assert "stream_options" not in server.requests[2].body  # remembered
    assert first.metadata["attempts"] == 1


@pytest.mark.asyncio
async def test_non_streaming_mode_reads_one_json_body(server: ScriptedServer) -> None:
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 2},
        "model": "m",
    }
    server.script(Reply(body=json.dumps(body).encode()))
    deltas: list[Delta] = []

    async def on_delta(delta: Delta) -> None:
        deltas.append(delta)

    async with backend(server, stream=False) as b:
        result = await b.complete(REQUEST, on_delta=on_delta)
    assert result.text == "Paris."
    assert result.usage.output_tokens == 2
    assert not result.usage_estimated
    assert [d.text for d in deltas] == ["Paris."]
    assert "stream" not in server.requests[0].body


@pytest.mark.asyncio
async def test_a_multi_line_sse_event_is_joined(server: ScriptedServer) -> None:
    # One event whose JSON is split over two data lines: the SSE spec joins them with a newline.
    part = chunk("x", finish="stop")
    server.script(Reply(events=[part[:10] + "\ndata: " + part[10:], "[DONE]"]))
    async with backend(server) as b:
        result = await b.complete(REQUEST)
    assert result.text == "x"


# --- retries ---------------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_retries_429_and_5xx_then_succeeds(server: ScriptedServer) -> None:
    server.script(
        error(429, "slow down", "rate_limit", **{"retry-after": "0"}), error(502, "bad gateway"), stream("ok")
    )
    with capture_logs() as logs:
        async with backend(server) as b:
            result = await b.complete(REQUEST)
    assert result.text == "ok"
    assert result.metadata["attempts"] == 3
    assert len(server.requests) == 3
    retries = [e for e in logs if e["event"] == "backend.retry"]
    assert [e["status"] for e in retries] == [429, 502]


@pytest.mark.asyncio
async def test_gives_up_after_max_retries(server: ScriptedServer) -> None:
    server.script(*[error(503, "busy")] * 5)
    async with backend(server, max_retries=2) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(REQUEST)
    assert caught.value.reason is BackendErrorReason.OVERLOADED
    assert caught.value.status == 503
    assert len(server.requests) == 3


@pytest.mark.asyncio
async def test_retries_stop_at_the_deadline(server: ScriptedServer) -> None:
    server.script(*[error(500, "oops")] * 5)
    # The first backoff (0.5-1 s) would pass the 200 ms budget: the error is raised at once, no second try.
    async with backend(server, backoff_base_ms=1000, backoff_max_ms=1000) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(CompletionRequest.from_prompt("x", timeout_ms=200))
    assert caught.value.reason is BackendErrorReason.INTERNAL
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_a_dropped_connection_is_retried(server: ScriptedServer) -> None:
    server.script(Reply(drop=True), stream("fine"))
    async with backend(server) as b:
        result = await b.complete(REQUEST)
    assert result.text == "fine"
    assert result.metadata["attempts"] == 2


@pytest.mark.asyncio
async def test_no_retry_once_deltas_were_delivered(server: ScriptedServer) -> None:
    broken = Reply(events=[chunk("partial")])  # no finish reason, no [DONE]: the stream broke
    server.script(broken, stream("never"))
    got: list[str] = []

    async def on_delta(delta: Delta) -> None:
        got.append(delta.text)

    async with backend(server) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(REQUEST, on_delta=on_delta)
    assert caught.value.reason is BackendErrorReason.INTERNAL
    assert got == ["partial"]
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_a_broken_stream_without_deltas_is_retried(server: ScriptedServer) -> None:
    server.script(Reply(events=[chunk("lost")]), stream("whole"))
    async with backend(server) as b:
        result = await b.complete(REQUEST)  # no on_delta: nothing reached the caller yet
    assert result.text == "whole"
    assert len(server.requests) == 2


# --- error mapping ---------------------------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (error(401, "invalid api key", "authentication_error"), BackendErrorReason.AUTH),
        (error(403, "forbidden"), BackendErrorReason.AUTH),
        (error(400, "temperature must be <= 2"), BackendErrorReason.BAD_REQUEST),
        (error(422, "messages: field required"), BackendErrorReason.BAD_REQUEST),
        (error(404, "model 'nope' not found", "not_found_error"), BackendErrorReason.NOT_FOUND),
        (
            error(400, "request (3031 tokens) exceeds the available context size", "exceed_context_size_error"),
            BackendErrorReason.CONTEXT_TOO_LONG,
        ),
        (
            error(400, "This model's maximum context length is 8192 tokens", "invalid_request_error"),
            BackendErrorReason.CONTEXT_TOO_LONG,
        ),
        (error(504, "upstream timed out"), BackendErrorReason.TIMEOUT),
    ],
)
async def test_client_errors_are_typed_and_not_retried(
    server: ScriptedServer, reply: Reply, reason: BackendErrorReason
) -> None:
    server.script(reply, stream("unused"))
    async with backend(server) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(REQUEST)
    assert caught.value.reason is reason
    assert caught.value.status == reply.status
    message = json.loads(reply.body)["error"]["message"]
    assert message in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_an_error_event_inside_the_stream_is_mapped(server: ScriptedServer) -> None:
    event = json.dumps(
        {"error": {"code": 400, "message": "context size exceeded", "type": "exceed_context_size_error"}}
    )
    server.script(Reply(events=[event]))
    async with backend(server) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(REQUEST)
    assert caught.value.reason is BackendErrorReason.CONTEXT_TOO_LONG
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_malformed_stream_data_is_an_internal_error(server: ScriptedServer) -> None:
    server.script(*[Reply(events=["{not json"])] * 2)
    async with backend(server, max_retries=1) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(REQUEST)
    assert caught.value.reason is BackendErrorReason.INTERNAL
    assert "malformed" in caught.value.detail


@pytest.mark.asyncio
async def test_connection_refused_is_unreachable_after_retries() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    b = OpenAIBackend(
        f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff_base_ms=1, rng=random.Random(1)
    )
    with capture_logs() as logs:
        async with b:
            with pytest.raises(BackendError) as caught:
                await b.complete(REQUEST)
    assert caught.value.reason is BackendErrorReason.UNREACHABLE
    assert f"127.0.0.1:{port}" in caught.value.detail
    assert caught.value.reason_code.value == "backend_error"
    assert sum(1 for e in logs if e["event"] == "backend.retry") == 2


@pytest.mark.asyncio
async def test_read_timeout_is_a_timeout(server: ScriptedServer) -> None:
    server.script(Reply(delay_s=0.6, events=[chunk("late", finish="stop"), "[DONE]"]))
    async with backend(server, read_timeout_ms=100) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(REQUEST)
    assert caught.value.reason is BackendErrorReason.TIMEOUT
    assert caught.value.reason_code.value == "backend_timeout"
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_the_request_deadline_bounds_the_call(server: ScriptedServer) -> None:
    server.script(Reply(delay_s=0.6, events=[chunk("late", finish="stop"), "[DONE]"]))
    async with backend(server) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(CompletionRequest.from_prompt("x", timeout_ms=100))
    assert caught.value.reason is BackendErrorReason.TIMEOUT


@pytest.mark.asyncio
async def test_a_past_deadline_fails_without_a_request(server: ScriptedServer) -> None:
    async with backend(server) as b:
        with pytest.raises(BackendError) as caught:
            await b.complete(CompletionRequest.from_prompt("x", deadline_ns=time.time_ns() - 1))
    assert caught.value.reason is BackendErrorReason.TIMEOUT
    assert server.requests == []


@pytest.mark.asyncio
async def test_max_concurrency_serialises_requests(server: ScriptedServer) -> None:
    import anyio

    server.script(*[Reply(delay_s=0.05, events=[chunk("x", finish="stop"), "[DONE]"]) for _ in range(3)])
    results: list[str] = []
    async with backend(server, max_concurrency=1) as b:

        async def one() -> None:
            results.append((await b.complete(REQUEST)).text)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
    assert results == ["x", "x", "x"]
    assert server.max_in_flight == 1


@pytest.mark.asyncio
async def test_a_closed_backend_refuses_work(server: ScriptedServer) -> None:
    b = backend(server)
    await b.aclose()
    await b.aclose()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        await b.complete(REQUEST)


def test_error_body_shapes() -> None:
    assert _error_text(b'{"error": {"message": "m", "type": "t"}}') == ("m", "t")
    assert _error_text(b'{"error": {"message": "m", "code": "c"}}') == ("m", "c")
    assert _error_text(b'{"error": "plain"}') == ("plain", None)
    assert _error_text(b'{"object": "error", "message": "vllm", "type": "BadRequestError"}') == (
        "vllm",
        "BadRequestError",
    )
    assert _error_text(b'{"detail": "fastapi"}') == ("fastapi", None)
    assert _error_text(b"<html>502</html>") == ("<html>502</html>", None)


def test_retry_after_header() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after("0.5") == 0.5
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert _retry_after("-1") is None
    assert _retry_after(None) is None
