"""The mesh file takes only what the wire takes (issue 15, D14): residency, region, skills, models and every price
or cost are checked with the wire types' own bounds, and ``any`` is no residency class (spec 1.3). A bad value is a
MeshConfigError naming the agent and the field, and `accord up` exits 2 with it, before anything starts. Values
the wire takes still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from accord.bus.server import free_port
from accord.mesh.build import build_agent_parts
from accord.mesh.config import AgentConfig, MeshConfigError, SimulatedBackendConfig, parse_mesh
from tests.support.cli import run_all


def _agent(line: str = "", backend: str = "", name: str = "cloud") -> str:
    return f"""
[[agents]]
name = "{name}"
tier = "cloud"
backend = {{ kind = "simulated"{backend} }}
{line}
"""


def _refusal(text: str) -> str:
    with pytest.raises(MeshConfigError) as info:
        parse_mesh(text, source="mesh.toml")
    return str(info.value)


def test_residency_any_is_refused_naming_the_agent_and_the_field() -> None:
    text = _refusal(_agent() + _agent('residency = ["eu", "any"]', name="edge"))
    assert text.startswith("mesh.toml: agent 'edge': ") and "$.agents[1].residency[1]" in text, text
    assert "'any' is reserved" in text, text


@pytest.mark.parametrize("region", ["eu.west", "eu west", "", "r" * 65, "eu\n"])
def test_an_invalid_region_is_refused_naming_the_agent_and_the_field(region: str) -> None:
    text = _refusal(_agent(f"region = {region!r}".replace("'", '"').replace("\n", "\\n")))
    assert text.startswith("mesh.toml: agent 'cloud': ") and "$.agents[0].region" in text, text


@pytest.mark.parametrize("key", ["price_in_per_1k_micros", "price_out_per_1k_micros"])
def test_a_negative_price_in_resources_is_refused(key: str) -> None:
    text = _refusal(_agent(f"resources = {{ {key} = -1 }}"))
    assert text.startswith("mesh.toml: agent 'cloud': ") and f"$.agents[0].resources.{key}" in text, text
    assert ">= 0" in text, text


@pytest.mark.parametrize("key", ["price_in_per_1k_micros", "price_out_per_1k_micros"])
def test_a_negative_simulated_price_is_refused(key: str) -> None:
    text = _refusal(_agent(backend=f", {key} = -5"))
    assert text.startswith("mesh.toml: agent 'cloud': ") and f"$.agents[0].backend.{key}" in text, text
    assert ">= 0" in text, text


@pytest.mark.parametrize(
    ("line", "backend", "at"),
    [
        ("", ", price_in_per_1k_micros = 1_000_000_000_000_001", "backend.price_in_per_1k_micros"),  # > Micros
        ("", ", quality_mean = 1.5", "backend.quality_mean"),
        ("", ", error_rate = -0.1", "backend.error_rate"),
        ("", ", tokens_per_s = 0.0", "backend.tokens_per_s"),
        ("", ", context_window = 0", "backend.context_window"),
        ("", ", ttft_ms = -1.0", "backend.ttft_ms"),
        ("", ", output_tokens = 0", "backend.output_tokens"),
        ("resources = { quality = 1.2 }", "", "resources.quality"),
        ("resources = { tokens_per_s = 0 }", "", "resources.tokens_per_s"),
        ("resources = { ttft_ms = -1 }", "", "resources.ttft_ms"),
        ("resources = { battery = 2.0 }", "", "resources.battery"),
        ("skills = [" + ", ".join(f'"s{i}"' for i in range(33)) + "]", "", "skills"),
        ("residency = [" + ", ".join(f'"r{i}"' for i in range(17)) + "]", "", "residency"),
        ('skills = ["chat.v2"]', "", "skills[0]"),
    ],
)
def test_values_the_wire_refuses_are_refused_where_they_are(line: str, backend: str, at: str) -> None:
    text = _refusal(_agent(line, backend))
    assert text.startswith("mesh.toml: agent 'cloud': ") and f"`$.agents[0].{at}`" in text, text


@pytest.mark.parametrize(
    ("kind", "at"),
    [
        ('{ kind = "strategy", strategy = "single", budget_micros = -1 }', "backend.budget_micros"),
        ('{ kind = "openai", base_url = "http://x", model = "gpt 4" }', "backend.model"),
        ('{ kind = "replay", log = "x.jsonl", model = "a b" }', "backend.model"),
    ],
)
def test_other_backends_prices_and_models_are_checked_as_on_the_wire(kind: str, at: str) -> None:
    text = _refusal(f'[[agents]]\nname = "gw"\ntier = "edge"\nbackend = {kind}\n')
    assert text.startswith("mesh.toml: agent 'gw': ") and f"`$.agents[0].{at}`" in text, text


def test_values_the_wire_takes_still_load() -> None:
    config = parse_mesh(
        _agent(
            'region = "eu-west"\nresidency = ["eu", "ch"]\nskills = ["chat", "math"]\n'
            "resources = { price_in_per_1k_micros = 0, price_out_per_1k_micros = 1500, quality = 1.0, "
            "battery = 0.5 }",
            ", price_in_per_1k_micros = 1_000_000_000_000_000, quality_mean = 0.0, ttft_ms = 0.0",
        )
    )
    agent = config.agents[0]
    assert isinstance(agent, AgentConfig) and isinstance(agent.backend, SimulatedBackendConfig)
    assert (agent.region, agent.residency, agent.skills) == ("eu-west", ["eu", "ch"], ["chat", "math"])
    assert agent.resources["price_out_per_1k_micros"] == 1500
    assert agent.backend.price_in_per_1k_micros == 10**15


def test_the_ack_delay_reaches_the_agent_profile_and_a_negative_one_is_refused() -> None:
    held = parse_mesh(_agent("ack_delay_ms = 0")).agents[0]
    profile, _ = build_agent_parts(held, held.name, seed=1)
    assert profile.ack_delay_ms == 0
    default = parse_mesh(_agent()).agents[0]
    assert build_agent_parts(default, default.name, seed=1)[0].ack_delay_ms == 20  # the profile's default
    refused = _refusal(_agent("ack_delay_ms = -1"))
    assert "cloud" in refused and "ack_delay_ms" in refused


def test_accord_up_exits_2_with_the_agent_and_the_field(tmp_path: Path) -> None:
    closed = f"nats://127.0.0.1:{free_port()}"  # nothing listens: a mesh that got as far as connecting fails there
    files = {
        "any.toml": _agent('residency = ["any"]'),
        "region.toml": _agent('region = "eu.west"'),
        "resources.toml": _agent("resources = { price_out_per_1k_micros = -1 }"),
        "simulated.toml": _agent(backend=", price_in_per_1k_micros = -1"),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    results = run_all({name: (["up", name, "--nats", closed], tmp_path) for name in files})
    where = {
        "any.toml": "residency[0]",
        "region.toml": "region",
        "resources.toml": "resources.price_out_per_1k_micros",
        "simulated.toml": "backend.price_in_per_1k_micros",
    }
    for name, (code, text) in results.items():
        assert code == 2 and "Traceback" not in text, (name, text)
        assert f"{name}: agent 'cloud': " in text and f"$.agents[0].{where[name]}" in text, (name, text)
