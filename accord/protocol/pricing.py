"""The resource and cost model of one model an agent serves: what it advertises, how it prices and times a bid.

Pure functions over a frozen record; no clock, no I/O. The contractor machine holds one :class:`ResourceModel`
per model it serves; the agent shell samples the device's live state (battery, metered link, measured decode
rate: :class:`DeviceState`) and feeds it to the machine, which applies it (:meth:`ResourceModel.with_state`).
The same record then makes both the bid of a task (:meth:`ResourceModel.quote`, from the prompt's real token
count) and the advertised price sheet (:meth:`ResourceModel.offer`), so the two never disagree on the rules.

Rules (also in the README):

- Tokens are estimated as ``ceil(characters / 4)`` plus 4 tokens per chat message (role markers) and 2 for the
  reply prefix. That is the usual rule of thumb for English text with BPE tokenisers; it is an estimate, and the
  backends report real counts where the model gives them.
- Latency = queueing + service + network. Service = ``ttft_ms`` + prompt tokens at ``prefill_tokens_per_s`` +
  output tokens at ``tokens_per_s`` (per slot). With ``load`` requests already running or waiting and ``slots``
  parallel slots, a new request waits ``ceil((load - slots + 1) / slots)`` service times when ``load >= slots``.
  Network = ``rtt_ms`` + the bytes of prompt and answer (4 bytes per token) over ``bandwidth_kbps`` (0: not
  limited).
- Price = ``ceil(prompt_tokens * price_in / 1000) + ceil(output_tokens * price_out / 1000)`` micro-USD
  (:func:`sheet_price`, the same rule a requester applies to an advertised sheet), times the battery multiplier,
  plus the metered-link surcharge. A bid is priced at ``max_output_tokens`` (the most the task can
  cost), so a requester's budget check is safe.
- Devices on battery (``battery`` is not None; None means mains power) charge more as the battery drains:
  multiplier ``1 + battery_premium * (1 - battery)`` (default: 1.5x at half charge, 2x when empty), and decline
  with ``busy`` / ``battery_low`` below ``battery_decline_below`` (default 15 %).
- On a metered link every byte moved costs ``metered_micros_per_mb`` (default 5,000 micro-USD per MB, about
  mobile data prices); with ``decline_when_metered`` the agent declines instead (``busy`` / ``metered_link``).
- An agent declines with ``context_too_long`` when prompt plus maximum output exceed the context window, and with
  ``busy`` / ``queue_full`` when ``load >= slots * (1 + max_queue_per_slot)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Final

import msgspec
from msgspec import Meta, Struct

from accord.protocol.messages import (
    ChatMessage,
    Connectivity,
    ContextWindow,
    DurationMs,
    Micros,
    ModelName,
    ModelOffer,
    ReasonCode,
    TokenRate,
    Unit,
)

__all__ = [
    "BYTES_PER_TOKEN",
    "CHARS_PER_TOKEN",
    "DevicePolicy",
    "DeviceState",
    "Quote",
    "Refusal",
    "ResourceModel",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "sheet_price",
]

CHARS_PER_TOKEN: Final = 4
"""Characters per token assumed by :func:`estimate_tokens` (rule of thumb for English text and BPE tokenisers)."""

BYTES_PER_TOKEN: Final = 4
"""Bytes on the wire per token of prompt or answer, for transfer time and metered-link cost."""

MESSAGE_OVERHEAD_TOKENS: Final = 4
"""Tokens a chat template adds per message (role markers, separators), ChatML-style."""

REPLY_OVERHEAD_TOKENS: Final = 2
"""Tokens the template adds to open the assistant's reply."""

_FRAME_OVERHEAD_BYTES: Final = 512
"""Bytes of envelope, signature and headers per request and per response."""


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``, estimated as ``ceil(len(text) / 4)`` (an estimate, not a tokeniser)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """Prompt tokens of a chat: each message's text estimate plus 4 per message plus 2 for the reply prefix."""
    if not messages:
        return 0
    body = sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)
    return body + REPLY_OVERHEAD_TOKENS


def sheet_price(input_tokens: int, output_tokens: int, price_in_per_1k: int, price_out_per_1k: int) -> int:
    """The price of a request by a price sheet: ``ceil(in * price_in / 1000) + ceil(out * price_out / 1000)``
    micro-USD (spec 6.7). Every price in Accord starts from this one rule."""
    return -(-input_tokens * price_in_per_1k // 1000) - (-output_tokens * price_out_per_1k // 1000)


class DeviceState(Struct, frozen=True, kw_only=True, gc=False):
    """What the agent shell measures about its device now, fed to the contractor machine. A field left UNSET was
    not measured: the model keeps what its configuration says.

    ``battery``: charge 0..1, or None when the device runs on mains power. ``metered``: whether the link is
    metered now. ``tokens_per_s``: measured decode rate per model name (a model not listed keeps its configured
    rate)."""

    battery: float | msgspec.UnsetType | None = msgspec.UNSET
    metered: bool | msgspec.UnsetType = msgspec.UNSET
    tokens_per_s: tuple[tuple[str, float], ...] = ()

    def rate_of(self, model: str) -> float | None:
        for name, rate in self.tokens_per_s:
            if name == model:
                return rate
        return None


class DevicePolicy(Struct, frozen=True, kw_only=True):
    """How a device prices or declines work when it runs on battery or over a metered link."""

    battery_decline_below: Unit = 0.15
    """Below this charge (0..1) the agent declines every task."""
    battery_premium: Annotated[float, Meta(ge=0.0, le=100.0)] = 1.0
    """Price multiplier on battery is ``1 + battery_premium * (1 - battery)``."""
    metered_micros_per_mb: Micros = 5_000
    """What one megabyte (10**6 bytes) moved over a metered link costs, in micro-USD."""
    decline_when_metered: bool = False
    """Decline every task while the link is metered, instead of charging for the bytes."""
    max_queue_per_slot: Annotated[int, Meta(ge=0, le=10_000)] = 4
    """Requests that may wait per slot before the agent declines with ``busy``."""


class Quote(Struct, frozen=True, kw_only=True, gc=False):
    """What a bid for one task would say: the price (for the maximum output) and the latency estimate."""

    model: str
    price_micros: int
    est_latency_ms: int
    quality: float


class Refusal(Struct, frozen=True, kw_only=True):
    """Why the agent would decline a task: a protocol reason code plus a short detail token."""

    reason: ReasonCode
    detail: str = ""


class ResourceModel(Struct, frozen=True, kw_only=True):
    """Capacity, network and price sheet of one model served by one agent.

    ``tokens_per_s`` is the decode rate of one slot; ``prefill_tokens_per_s`` the prompt-processing rate (0: ten
    times the decode rate, typical of llama.cpp on CPU). Prices are micro-USD per 1,000 tokens.
    """

    model: ModelName
    tokens_per_s: TokenRate
    context_window: ContextWindow
    prefill_tokens_per_s: Annotated[float, Meta(ge=0.0, le=1e7)] = 0.0
    ttft_ms: DurationMs = 0
    slots: Annotated[int, Meta(ge=1, le=100_000)] = 1
    price_in_per_1k_micros: Micros = 0
    price_out_per_1k_micros: Micros = 0
    quality: Unit = 0.5
    rtt_ms: DurationMs = 0
    bandwidth_kbps: Annotated[int, Meta(ge=0, le=10**9)] = 0
    """Link bandwidth in kilobits per second; 0: not a bottleneck (not counted)."""
    metered: bool = False
    intermittent: bool = False
    battery: Unit | None = None
    """Charge of a device on battery (0..1); None: on mains power (or not a device)."""
    policy: DevicePolicy = DevicePolicy()

    def __post_init__(self) -> None:
        # msgspec checks the Meta bounds when decoding or converting (see :meth:`from_mapping`); these are the
        # ones the arithmetic below relies on, checked on direct construction too.
        if not self.tokens_per_s > 0 or self.context_window < 1 or self.slots < 1:
            raise ValueError("tokens_per_s must be > 0, context_window >= 1 and slots >= 1")
        if self.battery is not None and not 0.0 <= self.battery <= 1.0:
            raise ValueError("battery must be within 0..1")

    @classmethod
    def from_offer(
        cls, offer: ModelOffer, connectivity: Connectivity | None = None, *, slots: int = 1
    ) -> ResourceModel:
        """A resource model with an advertised price sheet's prices, rates and window (``slots`` parallel
        requests, prefill at ten times the decode rate, the link's RTT and bandwidth when given)."""
        link = connectivity if connectivity is not None else Connectivity()
        return cls(
            model=offer.name,
            tokens_per_s=offer.tokens_per_s,
            context_window=offer.context_window,
            ttft_ms=offer.ttft_ms,
            price_in_per_1k_micros=offer.price_in_per_1k_micros,
            price_out_per_1k_micros=offer.price_out_per_1k_micros,
            quality=offer.quality,
            rtt_ms=link.rtt_ms,
            bandwidth_kbps=link.bandwidth_kbps,
            metered=link.metered,
            intermittent=link.intermittent,
            slots=slots,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ResourceModel:
        """Build and validate from a plain mapping (a TOML table); raises ``msgspec.ValidationError``."""
        return msgspec.convert(data, cls)

    # --- derived quantities ------------------------------------------------------------------------------------
    @property
    def prefill_rate(self) -> float:
        """Prompt tokens per second actually assumed (``prefill_tokens_per_s`` or ten times the decode rate)."""
        return self.prefill_tokens_per_s if self.prefill_tokens_per_s > 0 else self.tokens_per_s * 10.0

    @property
    def price_multiplier(self) -> float:
        """1.0 on mains power; ``1 + battery_premium * (1 - battery)`` on battery."""
        if self.battery is None:
            return 1.0
        return 1.0 + self.policy.battery_premium * (1.0 - self.battery)

    def fits_context(self, prompt_tokens: int, max_output_tokens: int) -> bool:
        return prompt_tokens + max_output_tokens <= self.context_window

    def service_ms(self, prompt_tokens: int, output_tokens: int) -> int:
        """Time one slot needs for the request once it starts: ttft + prefill + decode."""
        seconds = prompt_tokens / self.prefill_rate + output_tokens / self.tokens_per_s
        return self.ttft_ms + math.ceil(seconds * 1000.0)

    def transfer_bytes(self, prompt_tokens: int, output_tokens: int) -> int:
        return (prompt_tokens + output_tokens) * BYTES_PER_TOKEN + 2 * _FRAME_OVERHEAD_BYTES

    def network_ms(self, prompt_tokens: int, output_tokens: int) -> int:
        """One round trip plus the transfer time of prompt and answer over the link."""
        if self.bandwidth_kbps <= 0:
            return self.rtt_ms
        bits = self.transfer_bytes(prompt_tokens, output_tokens) * 8
        return self.rtt_ms + math.ceil(bits / self.bandwidth_kbps)  # kbit/s == bit/ms

    def queue_ms(self, prompt_tokens: int, output_tokens: int, load: int) -> int:
        """Expected wait for a free slot with ``load`` requests running or waiting ahead of this one."""
        if load < self.slots:
            return 0
        waves = -(-(load - self.slots + 1) // self.slots)
        return waves * self.service_ms(prompt_tokens, output_tokens)

    def estimate_latency_ms(self, prompt_tokens: int, max_output_tokens: int, load: int = 0) -> int:
        """Queueing + service + network time for a request, in ms (the bid's ``est_latency_ms``)."""
        return (
            self.queue_ms(prompt_tokens, max_output_tokens, load)
            + self.service_ms(prompt_tokens, max_output_tokens)
            + self.network_ms(prompt_tokens, max_output_tokens)
        )

    def base_price_micros(self, prompt_tokens: int, output_tokens: int) -> int:
        """The price sheet alone (:func:`sheet_price`)."""
        return sheet_price(prompt_tokens, output_tokens, self.price_in_per_1k_micros, self.price_out_per_1k_micros)

    def metered_micros(self, prompt_tokens: int, output_tokens: int) -> int:
        """What moving the request and answer costs on a metered link (0 when not metered)."""
        if not self.metered:
            return 0
        return math.ceil(
            self.transfer_bytes(prompt_tokens, output_tokens) * self.policy.metered_micros_per_mb / 1e6
        )

    def price_micros(self, prompt_tokens: int, output_tokens: int) -> int:
        """Price of a request: the sheet times the battery multiplier, plus the metered-link surcharge."""
        base = self.base_price_micros(prompt_tokens, output_tokens)
        return math.ceil(base * self.price_multiplier) + self.metered_micros(prompt_tokens, output_tokens)

    # --- decisions ---------------------------------------------------------------------------------------------
    def refusal(self, prompt_tokens: int, max_output_tokens: int, load: int = 0) -> Refusal | None:
        """Why this model would decline the task now, or None when it can take it."""
        if not self.fits_context(prompt_tokens, max_output_tokens):
            return Refusal(reason=ReasonCode.CONTEXT_TOO_LONG, detail="context_window")
        if self.battery is not None and self.battery < self.policy.battery_decline_below:
            return Refusal(reason=ReasonCode.BUSY, detail="battery_low")
        if self.metered and self.policy.decline_when_metered:
            return Refusal(reason=ReasonCode.BUSY, detail="metered_link")
        if load >= self.slots * (1 + self.policy.max_queue_per_slot):
            return Refusal(reason=ReasonCode.BUSY, detail="queue_full")
        return None

    def quote(self, prompt_tokens: int, max_output_tokens: int, load: int = 0) -> Quote | Refusal:
        """The price and latency a bid would carry, or the reason to decline."""
        refusal = self.refusal(prompt_tokens, max_output_tokens, load)
        if refusal is not None:
            return refusal
        return Quote(
            model=self.model,
            price_micros=self.price_micros(prompt_tokens, max_output_tokens),
            est_latency_ms=self.estimate_latency_ms(prompt_tokens, max_output_tokens, load),
            quality=self.quality,
        )

    # --- advertised records ------------------------------------------------------------------------------------
    def offer(self) -> ModelOffer:
        """The price sheet as advertised now: per-1k prices include the battery multiplier and the metered
        surcharge for 1,000 tokens' bytes, so a requester pricing from the card gets what a bid would say."""
        per_1k_bytes = 1000 * BYTES_PER_TOKEN
        surcharge = math.ceil(per_1k_bytes * self.policy.metered_micros_per_mb / 1e6) if self.metered else 0
        mult = self.price_multiplier
        return ModelOffer(
            name=self.model,
            context_window=self.context_window,
            tokens_per_s=self.tokens_per_s,
            price_in_per_1k_micros=math.ceil(self.price_in_per_1k_micros * mult) + surcharge,
            price_out_per_1k_micros=math.ceil(self.price_out_per_1k_micros * mult) + surcharge,
            quality=self.quality,
            ttft_ms=self.ttft_ms,
        )

    def connectivity(self) -> Connectivity:
        return Connectivity(
            metered=self.metered,
            intermittent=self.intermittent,
            rtt_ms=self.rtt_ms,
            bandwidth_kbps=self.bandwidth_kbps,
        )

    @property
    def name(self) -> str:
        """The model's name (what Bids, Results and price sheets call it)."""
        return self.model

    def with_state(self, state: DeviceState) -> ResourceModel:
        """This model as the device is now: its battery, its link, its measured decode rate."""
        rate = state.rate_of(self.model)
        changes: dict[str, object] = {}
        if state.battery is not msgspec.UNSET:
            changes["battery"] = None if state.battery is None else min(1.0, max(0.0, state.battery))
        if state.metered is not msgspec.UNSET:
            changes["metered"] = state.metered
        if rate is not None and rate > 0:
            changes["tokens_per_s"] = min(rate, 1e6)
        return msgspec.structs.replace(self, **changes)

    def replace(
        self,
        *,
        battery: float | msgspec.UnsetType | None = msgspec.UNSET,
        metered: bool | msgspec.UnsetType = msgspec.UNSET,
    ) -> ResourceModel:
        """A copy with a new battery level and/or metered flag (what a device agent observes changing)."""
        changes: dict[str, object] = {}
        if battery is not msgspec.UNSET:
            changes["battery"] = battery
        if metered is not msgspec.UNSET:
            changes["metered"] = metered
        return msgspec.structs.replace(self, **changes)
