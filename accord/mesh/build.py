"""Building a mesh file's agents: backends, the resource models they advertise, profiles, gateway agents."""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

from accord.backends import (
    Backend,
    LlamaCppBackend,
    LlamaCppConfig,
    OpenAIBackend,
    ReplayBackend,
    SimProfile,
    SimulatedBackend,
    load_outcome_log,
    smollm2_resources,
)
from accord.backends.a2a import A2ABackend
from accord.files import FileRefusedError
from accord.mesh.config import (
    A2ABackendConfig,
    AgentConfig,
    BackendConfig,
    LlamaCppBackendConfig,
    MeshConfig,
    MeshConfigError,
    OpenAIBackendConfig,
    ReplayBackendConfig,
    SimulatedBackendConfig,
    StrategyBackendConfig,
)
from accord.mesh.state import gateway_requester_name
from accord.protocol.contractor import ContractorProfile
from accord.protocol.pricing import ResourceModel
from accord.security import Identity
from accord.strategies import Strategy, StrategyConfigError, build_strategy, parse_strategy_option

__all__ = ["Gateway", "build_agent_parts", "build_backend", "gateway_of"]


def build_backend(
    config: BackendConfig, overrides: dict[str, float | int | bool], seed: int
) -> tuple[Backend, ResourceModel]:
    """The backend an agent runs and the resource model it advertises (with the mesh file's overrides)."""
    if isinstance(config, SimulatedBackendConfig):
        profile = SimProfile(
            model=config.model,
            quality_mean=config.quality_mean,
            ttft_ms=config.ttft_ms,
            tokens_per_s=config.tokens_per_s,
            output_tokens=config.output_tokens,
            price_in_per_1k_micros=config.price_in_per_1k_micros,
            price_out_per_1k_micros=config.price_out_per_1k_micros,
            error_rate=config.error_rate,
            context_window=config.context_window,
        )
        backend: Backend = SimulatedBackend(profile, seed=config.seed + seed, realtime=config.realtime)
        resources = profile.resources()
    elif isinstance(config, LlamaCppBackendConfig):
        llama = LlamaCppConfig(
            model_path=config.model_path,
            threads=config.threads,
            n_ctx=config.n_ctx,
            max_tokens_cap=config.max_tokens_cap,
        )
        backend = LlamaCppBackend(llama)
        resources = smollm2_resources()
    elif isinstance(config, OpenAIBackendConfig):
        api_key, headers = _credentials(config.api_key_env, config.api_key_header)
        backend = OpenAIBackend(
            config.base_url,
            model=config.model,
            api_key=api_key if headers is None else None,
            headers=headers,
            read_timeout_ms=config.read_timeout_ms,
            max_retries=config.max_retries,
        )
        resources = ResourceModel(model=config.model, tokens_per_s=50.0, context_window=8192)
    elif isinstance(config, A2ABackendConfig):
        api_key, headers = _credentials(config.api_key_env, config.api_key_header)
        if api_key is not None and headers is None:
            headers = {"authorization": f"Bearer {api_key}"}
        backend = A2ABackend(
            config.url, binding=config.binding, model=config.model, headers=headers, timeout_ms=config.timeout_ms
        )
        resources = ResourceModel(model=config.model, tokens_per_s=20.0, context_window=32_768)
    elif isinstance(config, ReplayBackendConfig):
        try:
            outcome_log = load_outcome_log(config.log)
        except (FileRefusedError, OSError, ValueError) as exc:  # OSError: reading on, a stream can fail
            reason = exc.detail if isinstance(exc, FileRefusedError) else str(exc)
            raise MeshConfigError(f"replay backend: cannot read the log {config.log}: {reason}") from exc
        backend = ReplayBackend(outcome_log, model=config.model)
        resources = ResourceModel(model=backend.model, tokens_per_s=1000.0, context_window=128_000)
    else:  # pragma: no cover - exhaustive over BackendConfig
        raise MeshConfigError(f"unknown backend {config!r}")
    return backend, _with_overrides(resources, overrides)


def _credentials(env: str | None, header: str | None) -> tuple[str | None, dict[str, str] | None]:
    """The API key from the environment, and the header to send it in when it is not a bearer token."""
    if env is None:
        return None, None
    key = os.environ.get(env)
    if key is None:
        raise MeshConfigError(f"environment variable {env} (api_key_env) is not set")
    return key, ({header: key} if header else None)


def _with_overrides(resources: ResourceModel, overrides: dict[str, float | int | bool]) -> ResourceModel:
    """``resources`` with the mesh file's ``resources`` table applied, validated like the mesh file."""
    if not overrides:
        return resources
    try:
        return ResourceModel.from_mapping({**msgspec.structs.asdict(resources), **overrides})
    except Exception as exc:
        raise MeshConfigError(f"resources: {exc}") from exc


def _gateway_resources(config: StrategyBackendConfig, overrides: dict[str, float | int | bool]) -> ResourceModel:
    kind = config.strategy.partition(":")[0]
    base = ResourceModel(model=f"strategy-{kind}", tokens_per_s=20.0, ttft_ms=2000, context_window=32_768)
    return _with_overrides(base, overrides)


def build_agent_parts(config: AgentConfig, name: str, seed: int) -> tuple[ContractorProfile, dict[str, Backend]]:
    """The agent's profile and backends by model name. A gateway's backend needs its requester's bus, so its
    dict is empty here; :func:`run_mesh` adds the StrategyBackend once that bus is up."""
    if isinstance(config.backend, StrategyBackendConfig):
        resources = _gateway_resources(config.backend, config.resources)
        backends: dict[str, Backend] = {}
    else:
        backend, resources = build_backend(config.backend, config.resources, seed)
        backends = {resources.model: backend}
    profile = ContractorProfile(
        name=name,
        tier=config.tier,
        region=config.region,
        models=(resources,),
        residency=tuple(config.residency),
        privacy=tuple(config.privacy),
        skills=tuple(config.skills),
        slots=config.slots if config.slots is not None else resources.slots,
        bid_hold_ms=config.bid_hold_ms,
        overhead_ms=config.overhead_ms,
        ack_delay_ms=config.ack_delay_ms,
    )
    return profile, backends


@dataclass(frozen=True)
class Gateway:
    """What a gateway agent needs besides its profile: its requester's identity, its strategy and its budget."""

    identity: Identity
    strategy: Strategy
    config: StrategyBackendConfig


def gateway_of(
    config: MeshConfig, agent: AgentConfig, identities: dict[str, Identity], name: str
) -> Gateway | None:
    if not isinstance(agent.backend, StrategyBackendConfig):
        return None
    try:
        strategy = build_strategy(parse_strategy_option(agent.backend.strategy, config.strategies))
    except StrategyConfigError as exc:
        raise MeshConfigError(f"agent {name}: backend strategy: {exc}") from exc
    return Gateway(identities[gateway_requester_name(name)], strategy, agent.backend)
