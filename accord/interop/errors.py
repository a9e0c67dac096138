"""Errors of the interop layer: a foreign document Accord cannot use, or an export asked for the impossible."""

from __future__ import annotations

from accord.errors import AccordError

__all__ = ["InteropError", "UnsoundMappingError"]


class InteropError(AccordError):
    """Converting to or from a foreign format failed.

    ``reason`` is a short stable token callers can branch on (``"invalid_url"``, ``"invalid_card"``, ...); the
    message text is for humans.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class UnsoundMappingError(InteropError):
    """An A2A Agent Card cannot become an Accord agent config without guessing.

    Reasons: ``invalid_card`` (not an Agent Card), ``invalid_extension`` (the Accord resources extension is
    malformed), ``required_extension`` (the card requires an extension Accord does not implement),
    ``accord_native`` (the card describes an Accord agent on NATS: trust its key instead of wrapping it),
    ``no_endpoint`` (no JSON-RPC, HTTP+JSON or OpenAI-compatible http(s) endpoint), ``no_model`` (an
    OpenAI-compatible endpoint without a model name), ``unsupported_security`` (only credentials Accord's backends
    cannot present), ``invalid_name`` (no usable name).
    """
