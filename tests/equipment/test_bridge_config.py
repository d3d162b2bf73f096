"""The bridge's YAML config: validated, unknown keys refused with their path, env variables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from equipment_bridge.cli import run
from equipment_bridge.config import (
    DEMO_CONFIG,
    BridgeConfigError,
    ModbusEquipment,
    OpcUaEquipment,
    counter_span,
    load_config,
    parse_config,
    read_token,
)


def base() -> dict[str, Any]:
    return {
        "bridge": {
            "id": "line1",
            "outbox": {"path": "var/outbox.sqlite"},
            "mes": {"url": "http://127.0.0.1:8000/graphql", "token_env": "MES_BRIDGE_TOKEN"},
        },
        "equipment": [
            {
                "code": "PRESS-01",
                "protocol": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840/mes/sim",
                "signals": {
                    "state": {
                        "kind": "STATE",
                        "node": "ns=2;s=PRESS-01.State",
                        "map": {1: "RUNNING", 3: "DOWN"},
                    },
                    "good": {"kind": "COUNTER", "node": "ns=2;s=PRESS-01.Good", "counter": "good"},
                },
            },
            {
                "code": "BLENDER-01",
                "protocol": "modbus_tcp",
                "host": "127.0.0.1",
                "port": 5020,
                "signals": {
                    "good": {
                        "kind": "COUNTER",
                        "address": 2,
                        "type": "UINT32",
                        "counter": "good",
                    },
                    "temp": {"kind": "VALUE", "address": 6, "type": "INT16", "scale": 0.1},
                },
            },
        ],
    }


def refused(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(BridgeConfigError) as caught:
        parse_config(data, env or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_valid_config_is_read_with_defaults() -> None:
    config = parse_config(base(), {})
    press, blender = config.equipment
    assert isinstance(press, OpcUaEquipment)
    assert isinstance(blender, ModbusEquipment)
    assert config.bridge.mes.batch_max == 500
    assert press.subscription.keepalive_count == 10
    assert blender.timeout_s == 1.0
    assert blender.retries == 1
    # A UINT32 Modbus counter wraps at 2**32 unless told otherwise; OPC UA default is 32 bits.
    good = blender.signals["good"]
    assert good.kind == "COUNTER"
    assert counter_span(good) == 2**32  # type: ignore[arg-type]


def test_an_unknown_key_is_refused_with_its_path() -> None:
    data = base()
    data["equipment"][1]["signals"]["temp"]["deadbnd"] = {"absolute": 0.5}
    assert refused(data) == "equipment.1.signals.temp.deadbnd: unknown key"

    data = base()
    data["bridge"]["mes"]["tokn_env"] = "X"
    assert refused(data) == "bridge.mes.tokn_env: unknown key"


def test_a_missing_key_and_a_bad_value_are_named() -> None:
    data = base()
    del data["equipment"][0]["signals"]["good"]["counter"]
    assert refused(data) == "equipment.0.signals.good.counter: required key is missing"

    data = base()
    data["equipment"][0]["signals"]["state"]["map"][2] = "BROKEN"
    message = refused(data)
    assert message.startswith("equipment.0.signals.state.map.2: ")
    assert "RUNNING" in message

    data = base()
    data["equipment"][1]["protocol"] = "profinet"
    assert "equipment.1: must be one of 'opcua', 'modbus_tcp'" in refused(data)

    data = base()
    data["equipment"][1]["signals"]["temp"]["kind"] = "GAUGE"
    assert refused(data).startswith("equipment.1.signals.temp: must be one of 'STATE'")


def test_rules_across_keys() -> None:
    data = base()
    data["equipment"][1]["code"] = "PRESS-01"
    assert refused(data) == "equipment: equipment code 'PRESS-01' appears twice"

    data = base()
    data["equipment"][0]["signals"]["good"].update(width_bits=16, rollover=1000)
    assert refused(data) == "equipment.0.signals.good: give width_bits or rollover, not both"

    data = base()
    data["equipment"][0]["subscription"] = {"keepalive_count": 10, "lifetime_count": 20}
    assert "lifetime_count must be at least 3 x keepalive_count" in refused(data)

    data = base()
    data["equipment"][1]["signals"]["other"] = {"kind": "COUNTER", "address": 10, "counter": "good"}
    assert "feed the same counter 'good'" in refused(data)


def test_the_outbox_limit_is_a_positive_number_of_events() -> None:
    assert parse_config(base(), {}).bridge.outbox.max_events == 5_000_000
    data = base()
    data["bridge"]["outbox"]["max_events"] = "${OUTBOX_MAX:-20000}"
    assert parse_config(data, {}).bridge.outbox.max_events == 20_000
    for bad in (0, -1, 2.5, "many"):
        data["bridge"]["outbox"]["max_events"] = bad
        assert refused(data).startswith("bridge.outbox.max_events: "), bad
    data["bridge"]["outbox"]["max_event"] = 10
    del data["bridge"]["outbox"]["max_events"]
    assert refused(data) == "bridge.outbox.max_event: unknown key"


def test_environment_variables_are_interpolated() -> None:
    data = base()
    data["bridge"]["mes"]["url"] = "${MES_URL:-http://127.0.0.1:8000/graphql}"
    data["equipment"][0]["endpoint"] = "opc.tcp://${SIM_HOST:-127.0.0.1}:${OPCUA_PORT:-4840}/x"
    data["equipment"][1]["port"] = "${MODBUS_PORT:-5020}"
    data["equipment"][1]["signals"]["good"]["rollover"] = "${ROLLOVER:-4294967296}"
    data["bridge"]["id"] = "cost$$center"

    defaults = parse_config(data, {})
    assert defaults.bridge.mes.url == "http://127.0.0.1:8000/graphql"
    assert defaults.equipment[0].endpoint == "opc.tcp://127.0.0.1:4840/x"  # type: ignore[union-attr]
    assert defaults.equipment[1].port == 5020  # type: ignore[union-attr]
    assert defaults.bridge.id == "cost$center"

    env = {
        "MES_URL": "http://mes:9000/graphql",
        "OPCUA_PORT": "4999",
        "MODBUS_PORT": "1502",
        "ROLLOVER": "1000",
    }
    config = parse_config(data, env)
    assert config.bridge.mes.url == "http://mes:9000/graphql"
    assert config.equipment[0].endpoint == "opc.tcp://127.0.0.1:4999/x"  # type: ignore[union-attr]
    blender = config.equipment[1]
    assert isinstance(blender, ModbusEquipment)
    assert blender.port == 1502
    assert counter_span(blender.signals["good"]) == 1000  # type: ignore[arg-type]

    data["bridge"]["outbox"]["path"] = "${OUTBOX_PATH}"
    assert refused(data) == "bridge.outbox.path: environment variable OUTBOX_PATH is not set"
    data["bridge"]["outbox"]["path"] = "x"
    data["equipment"][1]["port"] = "${MODBUS_PORT:-fifty}"
    assert refused(data).startswith("equipment.1.port: ")


def test_the_token_comes_from_the_named_variable() -> None:
    config = parse_config(base(), {})
    assert read_token(config, {"MES_BRIDGE_TOKEN": " abc "}) == "abc"
    with pytest.raises(BridgeConfigError, match="MES_BRIDGE_TOKEN is not set"):
        read_token(config, {})


def test_files_bad_yaml_and_the_shipped_demo(tmp_path: Path) -> None:
    with pytest.raises(BridgeConfigError, match=r"cannot read .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("bridge: [1, 2\n")
    with pytest.raises(BridgeConfigError, match=r"broken.yaml: not valid YAML \(line"):
        load_config(broken)
    typo = tmp_path / "typo.yaml"
    data = base()
    data["equipment"][0]["signals"]["state"]["reason_nod"] = "ns=2;s=X"
    typo.write_text(yaml.safe_dump(data))
    with pytest.raises(BridgeConfigError) as caught:
        load_config(typo)
    assert str(caught.value) == f"{typo}: equipment.0.signals.state.reason_nod: unknown key"

    demo = load_config(DEMO_CONFIG, {"MES_SIM_OPCUA_PORT": "14840", "MES_SIM_ROLLOVER": "1000"})
    codes = {eq.code: eq for eq in demo.equipment}
    assert set(codes) == {"PRESS-01", "BLENDER-01"}
    press = codes["PRESS-01"]
    assert isinstance(press, OpcUaEquipment)
    assert press.endpoint == "opc.tcp://127.0.0.1:14840/mes/sim"
    blender = codes["BLENDER-01"]
    assert isinstance(blender, ModbusEquipment)
    assert blender.port == 5020
    assert counter_span(blender.signals["good"]) == 1000  # type: ignore[arg-type]
    assert demo.bridge.mes.token_env == "MES_BRIDGE_TOKEN"


def test_run_refuses_a_bad_config_or_a_missing_token_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = base()
    data["bridge"]["outbox"]["path"] = str(tmp_path / "outbox.sqlite")
    good = tmp_path / "bridge.yaml"
    good.write_text(yaml.safe_dump(data))
    monkeypatch.delenv("MES_BRIDGE_TOKEN", raising=False)
    with pytest.raises(BridgeConfigError) as caught:
        run(str(good))
    assert str(caught.value) == (
        "bridge.mes.token_env: environment variable MES_BRIDGE_TOKEN is not set "
        "(it must hold an EQUIPMENT API token)"
    )
    data["equipment"][0]["signals"]["good"]["kind"] = "COUNTERS"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(BridgeConfigError, match=r"bad.yaml: equipment.0.signals.good: must be"):
        run(str(bad))
    # An outbox that cannot be created is a config problem too, found before starting.
    monkeypatch.setenv("MES_BRIDGE_TOKEN", "x")
    (tmp_path / "file").write_text("")
    data = base()
    data["bridge"]["outbox"]["path"] = str(tmp_path / "file" / "outbox.sqlite")
    blocked = tmp_path / "blocked.yaml"
    blocked.write_text(yaml.safe_dump(data))
    with pytest.raises(BridgeConfigError, match=r"^bridge.outbox.path: cannot open the outbox"):
        run(str(blocked))


def test_the_standalone_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    data = base()
    data["equipment"][1]["signals"]["temp"]["deadbnd"] = 1
    bad.write_text(yaml.safe_dump(data))
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "equipment_bridge", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == f"bridge: {bad}: equipment.1.signals.temp.deadbnd: unknown key\n"
    result = subprocess.run(
        [sys.executable, "-m", "equipment_bridge", "check", "--config", str(DEMO_CONFIG)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PRESS-01: opc.tcp://127.0.0.1:4840/mes/sim" in result.stdout
    assert "BLENDER-01: modbus://127.0.0.1:5020" in result.stdout
