"""A simulated LLM for load and scale tests, where real model time would only add noise. It is NOT a model.

Every simulated model's name starts with ``sim-`` (``sim-small``, ``sim-large``), every answer says it is
simulated, and the backend is named ``simulated``, so a simulated result can never pass for a real one.

A :class:`SimProfile` sets the distributions: answer quality (normal, clipped to 0..1; the answer counts as
correct with that probability), time to first token (log-normal around ``ttft_ms``, plus prefill at ten times the
decode rate), decode speed (log-normal around ``tokens_per_s``), answer length (log-normal around
``output_tokens``, capped by ``max_tokens``), cost (the price sheet times a normal factor around 1) and a failure
rate. Draws come from a ``random.Random`` seeded by (backend seed, model, prompt, request seed, how many times
this backend has seen that model and prompt), so one seed replays the same outcomes for the same requests, in
any interleaving.

By default nothing sleeps: timings are the simulated ones and ``complete`` returns at once. With
``realtime=True`` the backend waits that long for real (``anyio.sleep``), streams deltas as it goes, and limits
concurrency to the profile's ``slots`` (waiting requests report ``queued_ms``).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

import anyio
import anyio.lowlevel
import msgspec

from accord.backends.base import (
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    MetadataValue,
    elapsed_ms,
)
from accord.protocol.messages import Timings, Usage
from accord.protocol.pricing import ResourceModel, estimate_prompt_tokens
from accord.routing.records import normalize_prompt

__all__ = ["SIM_LARGE", "SIM_MEDIUM", "SIM_SMALL", "SimProfile", "SimulatedBackend"]

_DELTA_TOKENS: Final = 8
"""Tokens per streamed delta."""
_MAX_WORDS: Final = 20_000
"""Longest simulated answer, in words (keeps a result under the protocol's text limit)."""
_WORDS: Final = (
    "the", "a", "model", "answer", "is", "of", "to", "and", "result", "value", "therefore", "we", "find",
    "step", "so", "that", "it", "in", "for", "this",
)  # fmt: skip


class SimProfile(msgspec.Struct, frozen=True, kw_only=True):
    """The distributions of one simulated model. Times in ms, prices in micro-USD per 1,000 tokens."""

    model: str = "sim-small"
    quality_mean: float = 0.6
    quality_sd: float = 0.1
    ttft_ms: float = 50.0
    ttft_sigma: float = 0.25
    tokens_per_s: float = 60.0
    tokens_per_s_sigma: float = 0.1
    output_tokens: int = 64
    output_tokens_sigma: float = 0.5
    price_in_per_1k_micros: int = 0
    price_out_per_1k_micros: int = 0
    cost_sd: float = 0.0
    """Relative standard deviation of the actual cost around the price sheet."""
    error_rate: float = 0.0
    context_window: int = 8192
    slots: int = 4

    def __post_init__(self) -> None:
        if not self.model.startswith("sim-"):
            raise ValueError(f"a simulated model's name must start with 'sim-' (got {self.model!r})")
        if self.tokens_per_s <= 0 or self.ttft_ms < 0 or self.output_tokens < 1 or self.slots < 1:
            raise ValueError("tokens_per_s must be > 0, ttft_ms >= 0, output_tokens >= 1 and slots >= 1")
        if not 0.0 <= self.error_rate <= 1.0 or not 0.0 <= self.quality_mean <= 1.0:
            raise ValueError("error_rate and quality_mean must lie within 0..1")

    def resources(self, **changes: object) -> ResourceModel:
        """The resource model an agent advertises for this profile (``changes`` override fields)."""
        base = ResourceModel(
            model=self.model,
            tokens_per_s=self.tokens_per_s,
            ttft_ms=round(self.ttft_ms),
            context_window=self.context_window,
            slots=self.slots,
            price_in_per_1k_micros=self.price_in_per_1k_micros,
            price_out_per_1k_micros=self.price_out_per_1k_micros,
            quality=self.quality_mean,
        )
        return msgspec.structs.replace(base, **changes) if changes else base


SIM_SMALL: Final = SimProfile(
    model="sim-small", quality_mean=0.55, ttft_ms=30, tokens_per_s=80, output_tokens=48, slots=2
)
"""A device-class simulated model: fast to start, weak, free."""
SIM_MEDIUM: Final = SimProfile(
    model="sim-medium",
    quality_mean=0.7,
    ttft_ms=120,
    tokens_per_s=60,
    output_tokens=96,
    price_in_per_1k_micros=200,
    price_out_per_1k_micros=600,
    slots=8,
)
"""An edge-class simulated model."""
SIM_LARGE: Final = SimProfile(
    model="sim-large",
    quality_mean=0.85,
    ttft_ms=400,
    tokens_per_s=40,
    output_tokens=160,
    price_in_per_1k_micros=2_500,
    price_out_per_1k_micros=10_000,
    cost_sd=0.05,
    context_window=128_000,
    slots=64,
)
"""A cloud-class simulated model: strong, slower to start, priced like a frontier API ($2.50 / $10 per M)."""


class _Draw(msgspec.Struct, frozen=True, kw_only=True):
    failed: bool
    quality: float
    correct: bool
    output_tokens: int
    ttft_ms: int
    gen_ms: int
    cost_micros: int
    text: str


class SimulatedBackend:
    """Serves one or more :class:`SimProfile` models; the first is the default."""

    def __init__(
        self,
        profiles: SimProfile | Sequence[SimProfile] = SIM_SMALL,
        *,
        seed: int = 0,
        name: str = "simulated",
        realtime: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        listed = [profiles] if isinstance(profiles, SimProfile) else list(profiles)
        if not listed:
            raise ValueError("a simulated backend needs at least one profile")
        self._profiles = {p.model: p for p in listed}
        self._default = listed[0].model
        self._seed = seed
        self._name = name
        self._realtime = realtime
        self._clock = clock
        self._seen: dict[tuple[str, str], int] = {}
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._default

    @property
    def profiles(self) -> tuple[SimProfile, ...]:
        return tuple(self._profiles.values())

    async def aclose(self) -> None:
        return None

    def _rng(self, model: str, request: CompletionRequest) -> random.Random:
        prompt = normalize_prompt("\n".join(f"{m.role.value}:{m.content}" for m in request.messages))
        key = (model, prompt)
        occurrence = self._seen.get(key, 0)
        self._seen[key] = occurrence + 1
        material = f"{self._seed}\x00{model}\x00{prompt}\x00{request.seed}\x00{occurrence}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))

    def _draw(self, profile: SimProfile, request: CompletionRequest, prompt_tokens: int) -> _Draw:
        rng = self._rng(profile.model, request)
        failed = rng.random() < profile.error_rate
        quality = min(1.0, max(0.0, rng.gauss(profile.quality_mean, profile.quality_sd)))
        correct = rng.random() < quality
        length = rng.lognormvariate(math.log(profile.output_tokens), profile.output_tokens_sigma)
        output_tokens = max(1, min(request.max_tokens, _MAX_WORDS, round(length)))
        tokens_per_s = profile.tokens_per_s * rng.lognormvariate(0.0, profile.tokens_per_s_sigma)
        ttft = (
            rng.lognormvariate(math.log(max(profile.ttft_ms, 1e-3)), profile.ttft_sigma)
            if profile.ttft_ms
            else 0.0
        )
        ttft += prompt_tokens / (tokens_per_s * 10) * 1000
        gen_ms = output_tokens / tokens_per_s * 1000
        sheet = prompt_tokens * profile.price_in_per_1k_micros + output_tokens * profile.price_out_per_1k_micros
        factor = max(0.0, rng.gauss(1.0, profile.cost_sd)) if profile.cost_sd else 1.0
        cost = math.ceil(sheet / 1000 * factor)
        words = " ".join(rng.choices(_WORDS, k=max(0, output_tokens - 3)))
        text = f"[{profile.model} simulated answer] {words}".strip()
        return _Draw(
            failed=failed,
            quality=quality,
            correct=correct,
            output_tokens=output_tokens,
            ttft_ms=round(ttft),
            gen_ms=round(gen_ms),
            cost_micros=cost,
            text=text,
        )

    async def complete(self, request: CompletionRequest, *, on_delta: DeltaCallback | None = None) -> Completion:
        model = request.model or self._default
        profile = self._profiles.get(model)
        if profile is None:
            raise BackendError(
                BackendErrorReason.NOT_FOUND, f"no simulated model {model!r} here", backend=self._name
            )
        prompt_tokens = estimate_prompt_tokens(request.messages)
        if prompt_tokens + request.max_tokens > profile.context_window:
            raise BackendError(
                BackendErrorReason.CONTEXT_TOO_LONG,
                f"{prompt_tokens} + {request.max_tokens} tokens exceed {profile.context_window}",
                backend=self._name,
            )
        draw = self._draw(profile, request, prompt_tokens)
        deadline = request.effective_deadline_ns(self._clock())
        if self._realtime:
            timings = await self._run_realtime(profile, draw, deadline, on_delta)
        else:
            timings = await self._run_instant(draw, deadline, on_delta)
        finish = "length" if draw.output_tokens >= request.max_tokens else "stop"
        metadata: dict[str, MetadataValue] = {"simulated": True, "correct": draw.correct}
        return Completion(
            text=draw.text,
            model=model,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=draw.output_tokens),
            timings=timings,
            finish_reason=finish,
            backend=self._name,
            usage_estimated=True,
            cost_micros=draw.cost_micros,
            quality=draw.quality,
            metadata=metadata,
        )

    def _fail(self, draw: _Draw) -> None:
        if draw.failed:
            raise BackendError(BackendErrorReason.INTERNAL, "simulated failure", backend=self._name)

    async def _run_instant(self, draw: _Draw, deadline: int | None, on_delta: DeltaCallback | None) -> Timings:
        total = draw.ttft_ms + draw.gen_ms
        if deadline is not None and self._clock() + total * 1_000_000 > deadline:
            raise BackendError(
                BackendErrorReason.TIMEOUT, "the simulated latency passes the deadline", backend=self._name
            )
        self._fail(draw)
        await anyio.lowlevel.checkpoint()
        if on_delta is not None:
            for delta in _deltas(draw):
                await on_delta(delta)
        return Timings(ttft_ms=draw.ttft_ms, total_ms=total)

    async def _run_realtime(
        self, profile: SimProfile, draw: _Draw, deadline: int | None, on_delta: DeltaCallback | None
    ) -> Timings:
        limiter = self._limiters.get(profile.model)
        if limiter is None:
            limiter = self._limiters[profile.model] = anyio.CapacityLimiter(profile.slots)
        queued_from = time.perf_counter_ns()
        remaining = None if deadline is None else max(0.0, (deadline - self._clock()) / 1e9)
        try:
            with anyio.fail_after(remaining):
                async with limiter:
                    started = time.perf_counter_ns()
                    await anyio.sleep(draw.ttft_ms / 1000)
                    first = time.perf_counter_ns()
                    self._fail(draw)
                    per_token_s = draw.gen_ms / 1000 / draw.output_tokens
                    for delta in _deltas(draw):
                        await anyio.sleep(per_token_s * len(delta.text.split()))
                        if on_delta is not None:
                            await on_delta(delta)
                    end = time.perf_counter_ns()
        except TimeoutError as exc:
            raise BackendError(
                BackendErrorReason.TIMEOUT, "the request's deadline passed", backend=self._name
            ) from exc
        return Timings(
            queued_ms=elapsed_ms(queued_from, started),
            ttft_ms=elapsed_ms(started, first),
            total_ms=elapsed_ms(started, end),
        )


def _deltas(draw: _Draw) -> list[Delta]:
    """The answer cut into deltas of about eight words; ``output_tokens`` spread over them in order."""
    words = draw.text.split(" ")
    pieces = [" ".join(words[i : i + _DELTA_TOKENS]) for i in range(0, len(words), _DELTA_TOKENS)]
    out: list[Delta] = []
    for seq, piece in enumerate(pieces):
        text = piece if seq == 0 else " " + piece
        tokens = min(draw.output_tokens, round(draw.output_tokens * (seq + 1) / len(pieces)))
        out.append(Delta(seq=seq, text=text, output_tokens=tokens))
    return out
