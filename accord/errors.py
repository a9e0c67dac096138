"""The error hierarchy shared by every layer.

One root, :class:`AccordError`. ``LocalProtocolError`` means *we* misused the protocol (a bug or a bad call);
``RemoteProtocolError`` means a *peer* sent something the protocol forbids. Security and bus failures have
their own subclasses (in ``accord.security.errors`` and ``accord.bus.base``) that carry a reason code.
"""

from __future__ import annotations

__all__ = ["AccordError", "LocalProtocolError", "RemoteProtocolError"]


class AccordError(Exception):
    """Root of every error Accord raises on purpose."""


class LocalProtocolError(AccordError):
    """This side tried to do something the protocol does not allow (e.g. a transition missing from a table)."""


class RemoteProtocolError(AccordError):
    """A peer sent bytes or a message that the protocol does not allow.

    ``reason`` is a short stable token (``"frame_too_large"``, ``"malformed"``, ``"invalid"``, ...) that callers
    can branch on; the message text is for humans.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
