"""The OpenAI-compatible HTTP API in front of a running mesh (``accord serve``): chat completions (plain and
streamed), the models and strategies on offer, attestations by id, API keys with budgets."""

from accord.httpapi.app import ApiSettings, MeshApi
from accord.httpapi.errors import ApiError, api_error
from accord.httpapi.keys import (
    ApiKeyConfig,
    ApiKeysError,
    Caller,
    Callers,
    load_api_keys,
    make_callers,
    token_digest,
)
from accord.httpapi.server import serve_http

__all__ = [
    "ApiError",
    "ApiKeyConfig",
    "ApiKeysError",
    "ApiSettings",
    "Caller",
    "Callers",
    "MeshApi",
    "api_error",
    "load_api_keys",
    "make_callers",
    "serve_http",
    "token_digest",
]
