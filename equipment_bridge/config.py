"""The bridge's configuration: a YAML file validated with pydantic.

Unknown keys are refused (`extra="forbid"`) and every error names the key path, so a typo
in a plant's config fails loudly at start-up instead of silently dropping a signal.

String values may use environment variables: `${NAME}` (required) or `${NAME:-default}`;
`$$` stands for a literal `$`. Interpolation happens after YAML parsing, on string values
only, so a variable's content can never change the structure of the file. A value that is a
single `${...}` and reads as a number (`port: ${OPCUA_PORT:-4840}`) is validated as one.
Relative paths (outbox, certificates) are taken relative to the working directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class BridgeConfigError(Exception):
    """A bad or unreadable configuration; its message is one line naming the key path."""


class EquipmentState(StrEnum):
    RUNNING = "RUNNING"
    IDLE = "IDLE"
    DOWN = "DOWN"
    PLANNED_STOP = "PLANNED_STOP"
    SETUP = "SETUP"
    OFFLINE = "OFFLINE"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- bridge and MES


class Backoff(_Model):
    """Exponential backoff with full jitter: sleep uniform(0, min(cap, base * 2**attempt))."""

    base_s: float = Field(default=0.5, gt=0)
    cap_s: float = Field(default=60.0, gt=0)


class MesConfig(_Model):
    url: str = Field(pattern=r"^https?://")
    token_env: str = Field(min_length=1)
    batch_max: int = Field(default=500, ge=1, le=500)
    batch_linger_ms: int = Field(default=500, ge=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    backoff: Backoff = Backoff()
    # After a 401/403 the bridge stops sending; it tries again this often (the token may be
    # re-enabled on the server) and logs an error each time.
    auth_retry_s: float = Field(default=300.0, gt=0)


class OutboxConfig(_Model):
    path: str = Field(min_length=1)
    # The capacity limit, in events waiting to be sent. Past it VALUE history is thinned
    # (STATE, COUNTER and ALARM events are never dropped) and each machine that loses history
    # gets an ALARM OUTBOX_FULL. Roughly 300 bytes of disk per event (5 million: 1.5 GB).
    max_events: int = Field(default=5_000_000, gt=0)


class BridgeSection(_Model):
    id: str = Field(min_length=1)
    outbox: OutboxConfig
    mes: MesConfig
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


# ---------------------------------------------------------------- signal parts

StateMap = dict[int, EquipmentState]
TextMap = dict[int | str, str | None]


class AlarmText(_Model):
    code: str = Field(min_length=1)
    message: str | None = None


AlarmMap = dict[int | str, str | AlarmText]


class Deadband(_Model):
    absolute: float = Field(ge=0)


class _CounterFields(_Model):
    counter: str = Field(min_length=1, max_length=64)
    width_bits: int | None = Field(default=None, ge=1, le=64)
    rollover: int | None = Field(default=None, ge=2)
    # Plausibility: more than this many counts per second (over the time since the previous
    # sample, plus one second of slack) is an anomaly: quarantined and alarmed, never summed.
    max_per_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_span(self) -> _CounterFields:
        if self.width_bits is not None and self.rollover is not None:
            raise ValueError("give width_bits or rollover, not both")
        return self


class _ValueFields(_Model):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    unit: str | None = Field(default=None, max_length=20)
    scale: float = 1.0
    offset: float = 0.0
    deadband: Deadband | None = None
    heartbeat_s: float | None = Field(default=None, gt=0)


class _AlarmFields(_Model):
    map: AlarmMap = {}
    # The alarmCode used when the machine says "active" without a (known) code.
    default_code: str | None = Field(default=None, min_length=1, max_length=64)


# ---------------------------------------------------------------- OPC UA


class OpcUaStateSignal(_Model):
    kind: Literal["STATE"]
    node: str
    map: StateMap
    reason_node: str | None = None
    reason_map: TextMap | None = None


class OpcUaCounterSignal(_CounterFields):
    kind: Literal["COUNTER"]
    node: str


class OpcUaValueSignal(_ValueFields):
    kind: Literal["VALUE"]
    node: str


class OpcUaAlarmSignal(_AlarmFields):
    kind: Literal["ALARM"]
    code_node: str | None = None
    active_node: str | None = None

    @model_validator(mode="after")
    def _some_node(self) -> OpcUaAlarmSignal:
        if self.code_node is None and self.active_node is None:
            raise ValueError("an ALARM signal needs code_node, active_node or both")
        return self


OpcUaSignal = Annotated[
    OpcUaStateSignal | OpcUaCounterSignal | OpcUaValueSignal | OpcUaAlarmSignal,
    Field(discriminator="kind"),
]


class OpcUaSecurity(_Model):
    """Basic256Sha256 with the bridge's own certificate; never a fallback to security None.
    The files must exist when the config is loaded (their content is checked at connect)."""

    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    # Must equal the URI in the bridge certificate's subjectAltName; by default, that URI.
    app_uri: str | None = Field(default=None, min_length=1)
    cert: str = Field(min_length=1)  # DER or PEM
    key: str = Field(min_length=1)  # PEM (or DER)
    key_password_env: str | None = Field(default=None, min_length=1)
    # The server's certificate, pinned. Without it, the certificate the server lists with its
    # endpoints is taken as it is each time the bridge connects (only its dates are checked).
    server_cert: str | None = Field(default=None, min_length=1)

    @field_validator("cert", "key", "server_cert")
    @classmethod
    def _exists(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).is_file():
            where = "" if Path(path).is_absolute() else f" (relative to {Path.cwd()})"
            raise ValueError(f"no such file: {path}{where}")
        return path


class OpcUaSubscription(_Model):
    publishing_ms: int = Field(default=250, ge=10)
    keepalive_count: int = Field(default=10, ge=1)
    lifetime_count: int = Field(default=60, ge=3)
    sampling_ms: int = Field(default=0, ge=0)
    # Per monitored item, on the server: > 1 so changes within a publishing interval survive.
    queue_size: int = Field(default=20, ge=1)
    # The client-side queue; when it overflows the client reconnects and resyncs (never drops
    # silently).
    client_queue: int = Field(default=50_000, ge=100)

    @model_validator(mode="after")
    def _lifetime(self) -> OpcUaSubscription:
        if self.lifetime_count < 3 * self.keepalive_count:
            raise ValueError("lifetime_count must be at least 3 x keepalive_count")
        return self


class OpcUaEquipment(_Model):
    code: str = Field(min_length=1)
    protocol: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    security: OpcUaSecurity | None = None
    request_timeout_s: float = Field(default=4.0, gt=0)
    watchdog_s: float = Field(default=1.0, gt=0)
    reconnect_max_delay_s: float = Field(default=30.0, gt=0)
    backoff: Backoff = Backoff(base_s=0.5, cap_s=30.0)
    subscription: OpcUaSubscription = OpcUaSubscription()
    signals: dict[str, OpcUaSignal] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_signals(self) -> OpcUaEquipment:
        _check_signal_set(self.signals)
        return self


# ---------------------------------------------------------------- Modbus TCP

RegisterType = Literal[
    "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FLOAT32", "FLOAT64"
]
REGISTER_COUNT: dict[str, int] = {
    "INT16": 1,
    "UINT16": 1,
    "INT32": 2,
    "UINT32": 2,
    "INT64": 4,
    "UINT64": 4,
    "FLOAT32": 2,
    "FLOAT64": 4,
}


class Register(_Model):
    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535)
    type: RegisterType = "UINT16"
    word_order: Literal["big", "little"] = "big"

    @model_validator(mode="after")
    def _fits(self) -> Register:
        if self.address + REGISTER_COUNT[self.type] > 65536:
            raise ValueError("the value runs past register 65535")
        return self

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.type]


class MappedRegister(Register):
    map: TextMap | None = None


class ModbusStateSignal(Register):
    kind: Literal["STATE"]
    map: StateMap
    reason: MappedRegister | None = None


class ModbusCounterSignal(Register, _CounterFields):
    kind: Literal["COUNTER"]


class ModbusValueSignal(Register, _ValueFields):
    kind: Literal["VALUE"]


class ModbusAlarmSignal(_AlarmFields):
    kind: Literal["ALARM"]
    code: Register | None = None
    active: Register | None = None

    @model_validator(mode="after")
    def _some_register(self) -> ModbusAlarmSignal:
        if self.code is None and self.active is None:
            raise ValueError("an ALARM signal needs code, active or both")
        return self


ModbusSignal = Annotated[
    ModbusStateSignal | ModbusCounterSignal | ModbusValueSignal | ModbusAlarmSignal,
    Field(discriminator="kind"),
]


class ModbusEquipment(_Model):
    code: str = Field(min_length=1)
    protocol: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    device_id: int = Field(default=1, ge=0, le=255)
    poll_ms: int = Field(default=500, ge=10)
    # Keep both small: a hung peer is only noticed after about (retries+1) x timeout per read.
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0, le=5)
    # Polls in a row where every read timed out before the link counts as lost.
    failed_polls_offline: int = Field(default=2, ge=1)
    backoff: Backoff = Backoff(base_s=0.5, cap_s=30.0)
    signals: dict[str, ModbusSignal] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_signals(self) -> ModbusEquipment:
        _check_signal_set(self.signals)
        return self


Equipment = Annotated[OpcUaEquipment | ModbusEquipment, Field(discriminator="protocol")]


class BridgeConfig(_Model):
    bridge: BridgeSection
    equipment: list[Equipment] = Field(min_length=1)

    @field_validator("equipment")
    @classmethod
    def _unique_codes(
        cls, equipment: list[OpcUaEquipment | ModbusEquipment]
    ) -> list[OpcUaEquipment | ModbusEquipment]:
        seen: set[str] = set()
        for eq in equipment:
            if eq.code in seen:
                raise ValueError(f"equipment code {eq.code!r} appears twice")
            seen.add(eq.code)
        return equipment


def _check_signal_set(signals: Mapping[str, Any]) -> None:
    states = [name for name, s in signals.items() if s.kind == "STATE"]
    if len(states) > 1:
        raise ValueError(f"at most one STATE signal per equipment (got {', '.join(states)})")
    counters: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, s in signals.items():
        if "#" in name:
            raise ValueError(f"signal name {name!r} must not contain '#'")
        if s.kind == "COUNTER":
            if s.counter in counters:
                raise ValueError(
                    f"signals {counters[s.counter]} and {name} feed the same counter {s.counter!r}"
                )
            counters[s.counter] = name
        if s.kind == "VALUE":
            value_name = s.name or name
            if value_name in values:
                raise ValueError(f"signals {values[value_name]} and {name} share value name")
            values[value_name] = name


# ---------------------------------------------------------------- helpers used at run time


def counter_span(signal: OpcUaCounterSignal | ModbusCounterSignal) -> int:
    """The value at which the counter wraps to 0 (`rollover`, or 2**width_bits)."""
    if signal.rollover is not None:
        return signal.rollover
    if signal.width_bits is not None:
        return 1 << signal.width_bits
    if isinstance(signal, ModbusCounterSignal):
        return 1 << (16 * signal.count)
    return 1 << 32


def value_name(signal_name: str, signal: OpcUaValueSignal | ModbusValueSignal) -> str:
    return signal.name or signal_name


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _interpolate(value: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            _interpolate(v, f"{path}.{i}" if path else str(i), env) for i, v in enumerate(value)
        ]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise BridgeConfigError(f"{path}: environment variable {name} is not set")

    whole = _VAR.fullmatch(value) is not None and value != "$$"
    result = _VAR.sub(sub, value)
    if whole and _NUMBER.match(result):
        number = float(result)
        return int(number) if number.is_integer() and "." not in result else number
    return result


def _loc(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a key path, without the union-member tags it inserts."""
    parts: list[str] = []
    for item in loc:
        text = str(item)
        if text in {"opcua", "modbus_tcp", "STATE", "COUNTER", "VALUE", "ALARM"}:
            continue
        if text.startswith(("function-", "tagged-union[", "union[")):
            continue
        if text.endswith("[key]"):
            text = text[: -len("[key]")]
        parts.append(text)
    return ".".join(parts) or "(top level)"


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _describe(error: ValidationError) -> str:
    errors = error.errors()
    first = errors[0]
    kind = first["type"]
    message = _MESSAGES.get(kind) or first["msg"]
    if kind == "union_tag_invalid":
        expected = first.get("ctx", {}).get("expected_tags", "")
        message = f"must be one of {expected}"
    elif kind == "union_tag_not_found":
        message = f"needs the key {first.get('ctx', {}).get('discriminator', '')}".strip()
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{_loc(tuple(first['loc']))}: {message}{more}"


def parse_config(data: Any, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Validates already-parsed YAML data (after environment interpolation)."""
    if not isinstance(data, dict):
        raise BridgeConfigError("the configuration must be a mapping with bridge and equipment")
    data = _interpolate(data, "", os.environ if env is None else env)
    try:
        return BridgeConfig.model_validate(data)
    except ValidationError as error:
        raise BridgeConfigError(_describe(error)) from None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BridgeConfig:
    """Reads and validates a YAML config file; any problem is one BridgeConfigError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BridgeConfigError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BridgeConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    try:
        return parse_config(data, env)
    except BridgeConfigError as error:
        raise BridgeConfigError(f"{path}: {error}") from None


def read_token(config: BridgeConfig, env: Mapping[str, str] | None = None) -> str:
    """The MES token from the environment variable the config names."""
    name = config.bridge.mes.token_env
    token = (os.environ if env is None else env).get(name, "").strip()
    if not token:
        raise BridgeConfigError(
            f"bridge.mes.token_env: environment variable {name} is not set "
            "(it must hold an EQUIPMENT API token)"
        )
    return token


# The shipped demo config (PRESS-01 over OPC UA, BLENDER-01 over Modbus TCP).
DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
