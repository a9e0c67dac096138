"""Accord: independent LLM endpoints collaborating on tasks over NATS with a typed, signed protocol."""

__version__ = "0.1.0"
__all__ = ["__version__"]
