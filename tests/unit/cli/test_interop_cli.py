"""`accord interop asyncapi`, `accord interop card` and `accord card`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from a2a.compat.v0_3 import types as a2a_v03
from typer.testing import CliRunner

from accord.cli import app
from accord.interop import ACCORD_NATS_BINDING, advertise_to_card, card_to_agent_config
from accord.protocol import codec
from accord.protocol.messages import Advertise, Cancel, ModelOffer, Tier
from accord.security.nkeys import encode_public
from accord.spec.asyncapi import asyncapi_yaml

runner = CliRunner()
GATEWAY = "https://gateway.example.com/a2a"


def _advertise() -> Advertise:
    return Advertise(
        id="1" * 32,
        sender=encode_public(bytes(32)),
        ts=1,
        name="phone-7",
        tier=Tier.DEVICE,
        region="home",
        residency=["eu"],
        skills=["chat"],
        models=[ModelOffer(name="phi-3-mini", context_window=4096, tokens_per_s=12.0, price_out_per_1k_micros=5)],
        battery=0.4,
    )


@pytest.fixture
def advertise_file(tmp_path: Path) -> Path:
    path = tmp_path / "advertise.json"
    path.write_bytes(codec.encode_json(_advertise()))
    return path


def test_asyncapi_write_and_check(tmp_path: Path) -> None:
    out = tmp_path / "spec" / "asyncapi.yaml"
    result = runner.invoke(app, ["interop", "asyncapi", "--check", "-o", str(out)])
    assert result.exit_code == 1 and "run `accord interop asyncapi`" in result.stderr

    result = runner.invoke(app, ["interop", "asyncapi", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8") == asyncapi_yaml()
    assert runner.invoke(app, ["interop", "asyncapi", "--check", "-o", str(out)]).exit_code == 0

    out.write_text(out.read_text(encoding="utf-8").replace("accord.v1.dm.", "accord.v1.xx."), encoding="utf-8")
    result = runner.invoke(app, ["interop", "asyncapi", "--check", "-o", str(out)])
    assert result.exit_code == 1
    assert "stale" in result.stderr and "run `accord interop asyncapi`" in result.stderr


def test_export_card(advertise_file: Path) -> None:
    result = runner.invoke(
        app, ["interop", "card", "--advertise", str(advertise_file), "--url", GATEWAY, "--bearer"]
    )
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card == advertise_to_card(_advertise(), url=GATEWAY, bearer_auth=True)
    a2a_v03.AgentCard.model_validate(card)

    # The shape, `accord card AGENT`, prints the same card.
    top = runner.invoke(app, ["card", str(advertise_file), "--url", GATEWAY, "--bearer"])
    assert top.exit_code == 0, top.output
    assert json.loads(top.stdout) == card


def test_export_defaults_to_the_nats_binding(advertise_file: Path) -> None:
    result = runner.invoke(app, ["card", str(advertise_file), "--nats", "nats://10.1.2.3:4222"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert (card["url"], card["preferredTransport"]) == ("nats://10.1.2.3:4222", ACCORD_NATS_BINDING)


def test_export_a2a_1_0(advertise_file: Path) -> None:
    result = runner.invoke(app, ["card", str(advertise_file), "--url", GATEWAY, "--a2a-version", "1.0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["supportedInterfaces"][0]["protocolVersion"] == "1.0"


def test_import_card_as_toml_and_json(tmp_path: Path) -> None:
    card = advertise_to_card(_advertise(), url=GATEWAY)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    expected = card_to_agent_config(card)

    result = runner.invoke(app, ["card", "--import", str(path)])
    assert result.exit_code == 0, result.output
    assert tomllib.loads(result.stdout) == {"agents": [expected]}
    assert expected["resources"]["price_out_per_1k_micros"] == 5
    assert expected["tier"] == "device"

    result = runner.invoke(app, ["interop", "card", "--import", str(path), "--format", "json", "--tier", "edge"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**expected, "tier": "edge"}


def _write(tmp_path: Path, name: str, data: Any) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_import_refusals_exit_1_with_the_reason(tmp_path: Path) -> None:
    grpc_only = {"name": "g", "url": "https://g/x", "preferredTransport": "GRPC"}
    for data, reason in [
        (grpc_only, "no_endpoint"),
        ("[1, 2]", "invalid_card"),
        ("{not json", "invalid_card"),
        ({"url": GATEWAY}, "invalid_card"),
    ]:
        result = runner.invoke(app, ["card", "--import", str(_write(tmp_path, "c.json", data))])
        assert result.exit_code == 1, (data, result.output)
        assert reason in result.stderr, (data, result.stderr)


def test_export_refusals(tmp_path: Path, advertise_file: Path) -> None:
    cancel = Cancel(id="2" * 32, sender=encode_public(bytes(32)), ts=1, task_id="3" * 32)
    not_advertise = tmp_path / "cancel.json"
    not_advertise.write_bytes(codec.encode_json(cancel))
    result = runner.invoke(app, ["card", str(not_advertise)])
    assert result.exit_code == 1 and "not an Advertise" in result.stderr

    broken = _write(tmp_path, "broken.json", '{"type": "advertise"}')
    result = runner.invoke(app, ["card", str(broken)])
    assert result.exit_code == 1 and "invalid" in result.stderr

    result = runner.invoke(app, ["card", str(advertise_file), "--url", "ftp://x/y"])
    assert result.exit_code == 1 and "invalid_url" in result.stderr

    result = runner.invoke(app, ["card", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "cannot read" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["card"],
        ["interop", "card"],
        ["card", "x.json", "--import", "y.json"],
        ["interop", "card", "--advertise", "x.json", "--import", "y.json"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "exactly one of" in result.stderr
