"""LLM backends behind one small interface (:class:`Backend`): chat messages in; text, usage, timings out.

- :class:`OpenAIBackend`: any OpenAI-compatible chat-completions endpoint over httpx (vLLM, Ollama, llama.cpp's
  server, OpenAI), with retries, streaming and typed errors.
- :class:`LlamaCppBackend`: a local GGUF model in process through xllamacpp (SmolLM2-135M by default);
  :class:`LlamaCppServer` also serves it on an OpenAI-compatible loopback endpoint.
- :class:`ReplayBackend`: answers from an :class:`OutcomeLog` of :class:`~accord.routing.records.Outcome` records
  (real responses; :mod:`accord.bench.data.routellm` loads the RouteLLM sets).
- :class:`SimulatedBackend`: a seeded simulation (models named ``sim-*``) for load and scale tests.
"""

from accord.backends.a2a import A2ABackend
from accord.backends.base import (
    Backend,
    BackendError,
    BackendErrorReason,
    Completion,
    CompletionRequest,
    Delta,
    DeltaCallback,
    MetadataValue,
    TokenCounter,
    check_backend,
    with_system,
)
from accord.backends.llamacpp import (
    DEFAULT_STOP,
    DEFAULT_SYSTEM,
    SMOLLM2_INSTALL,
    SMOLLM2_MODEL,
    XLLAMACPP_INSTALL,
    LlamaCppBackend,
    LlamaCppConfig,
    LlamaCppServer,
    find_smollm2_gguf,
    smollm2_resources,
)
from accord.backends.openai import OpenAIBackend
from accord.backends.replay import (
    NO_TEXT_MARKER,
    OutcomeLog,
    ReplayBackend,
    ReplayMissError,
    load_outcome_log,
)
from accord.backends.simulated import SIM_LARGE, SIM_MEDIUM, SIM_SMALL, SimProfile, SimulatedBackend

__all__ = [
    "A2ABackend",
    "DEFAULT_STOP",
    "DEFAULT_SYSTEM",
    "NO_TEXT_MARKER",
    "SIM_LARGE",
    "SIM_MEDIUM",
    "SIM_SMALL",
    "SMOLLM2_INSTALL",
    "SMOLLM2_MODEL",
    "XLLAMACPP_INSTALL",
    "Backend",
    "BackendError",
    "BackendErrorReason",
    "Completion",
    "CompletionRequest",
    "Delta",
    "DeltaCallback",
    "LlamaCppBackend",
    "LlamaCppConfig",
    "LlamaCppServer",
    "MetadataValue",
    "OpenAIBackend",
    "OutcomeLog",
    "ReplayBackend",
    "ReplayMissError",
    "SimProfile",
    "SimulatedBackend",
    "TokenCounter",
    "check_backend",
    "find_smollm2_gguf",
    "load_outcome_log",
    "smollm2_resources",
    "with_system",
]
