"""SubscriptionBase: what every bus's subscription does the same way, so that each bus writes only what differs.

The base keeps the :class:`~accord.bus.base.Subscription` contract: ``subject``, ``queue`` and ``max_pending``
fixed at creation; ``dropped`` read from the ``_dropped`` counter the bus increments; ``next`` and its timeout;
iteration that ends once the subscription is closed; ``unsubscribe`` (idempotent) and ``async with``.

A bus's subclass says how many messages are ``pending``, how to take a buffered message without waiting
(``_poll``), how to wait for one (``_wait``), what closing throws away (``_discard``) and how interest is removed
underneath (``_remove_interest``). Taking a message is split in two so that a message already buffered, the common
case in a busy receive loop, costs a plain call and no extra coroutine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import anyio

from accord.bus.base import BusClosedError, BusMessage, BusTimeoutError

__all__ = ["SubscriptionBase"]


class SubscriptionBase(ABC):
    """The shared half of a bus subscription; see the module docstring for what a subclass adds."""

    __slots__ = ("_closed", "_dropped", "_max_pending", "_queue", "_subject")

    def __init__(self, subject: str, queue: str | None, max_pending: int) -> None:
        self._subject = subject
        self._queue = queue
        self._max_pending = max_pending
        self._closed = False
        self._dropped = 0

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def queue(self) -> str | None:
        return self._queue

    @property
    def max_pending(self) -> int:
        return self._max_pending

    @property
    @abstractmethod
    def pending(self) -> int:
        """Messages buffered now, not yet taken."""

    @property
    def dropped(self) -> int:
        """Messages thrown away because the buffer was full (counted by the bus in ``_dropped``)."""
        return self._dropped

    # --- what a bus implements -----------------------------------------------------------------------------------
    @abstractmethod
    def _poll(self) -> BusMessage | None:
        """The next buffered message without waiting, or None when the reader has to ``_wait`` for one.

        May raise BusClosedError once closed (or return None and let ``_wait`` raise it).
        """

    @abstractmethod
    async def _wait(self) -> BusMessage:
        """Wait for the next message; BusClosedError once closed, also when the close comes while waiting."""

    @abstractmethod
    def _discard(self) -> None:
        """Called once, at close: throw away what is buffered and wake a reader blocked in ``_wait``."""

    @abstractmethod
    async def _remove_interest(self) -> None:
        """Called once, by ``unsubscribe`` after ``_discard``: tell the broker or server."""

    # --- the contract --------------------------------------------------------------------------------------------
    def _mark_closed(self) -> None:
        """Stop delivering; idempotent. Synchronous, so that a bus can close its subscriptions from a callback
        (the server connection is gone: there is no interest left to remove)."""
        if not self._closed:
            self._closed = True
            self._discard()

    async def next(self, *, timeout_ms: int | None = None) -> BusMessage:
        """The next message; BusTimeoutError after ``timeout_ms``, BusClosedError once unsubscribed/closed."""
        msg = self._poll()
        if msg is not None:
            return msg
        if timeout_ms is None:
            return await self._wait()
        try:
            with anyio.fail_after(timeout_ms / 1000):
                return await self._wait()
        except TimeoutError:
            raise BusTimeoutError(f"no message within {timeout_ms} ms", subject=self._subject) from None

    def __aiter__(self) -> AsyncIterator[BusMessage]:
        return self

    async def __anext__(self) -> BusMessage:
        """``next()`` without a timeout, written out: the shells' receive loops run through here for every
        message, and a coroutine less per message is measurable."""
        try:
            msg = self._poll()
            if msg is None:
                msg = await self._wait()
        except BusClosedError:
            raise StopAsyncIteration from None
        return msg

    async def unsubscribe(self) -> None:
        """Remove interest; idempotent. Messages still buffered are discarded."""
        if self._closed:
            return
        self._mark_closed()
        await self._remove_interest()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.unsubscribe()
