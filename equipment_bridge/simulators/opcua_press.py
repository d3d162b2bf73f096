"""The tablet press PRESS-01 as an OPC UA server (asyncua).

Endpoint `opc.tcp://127.0.0.1:<port>/mes/sim`, security None (or, with a `PressSecurity`, only
Basic256Sha256 SignAndEncrypt for trusted client certificates), namespace `urn:mes:simulator`
(index 2). Object `ns=2;s=PRESS-01` under Objects with read-only variables:

| node id                        | type    | value                                      |
|--------------------------------|---------|--------------------------------------------|
| `ns=2;s=PRESS-01.State`        | Int32   | state code (see `model`)                   |
| `ns=2;s=PRESS-01.StateReason`  | String  | reason text ("" when none, see `model`)    |
| `ns=2;s=PRESS-01.Good`         | UInt32  | good count, cumulative, wraps at rollover  |
| `ns=2;s=PRESS-01.Reject`       | UInt32  | reject count, same                         |
| `ns=2;s=PRESS-01.Temperature`  | Double  | °C, 0.1 resolution                         |
| `ns=2;s=PRESS-01.AlarmCode`    | String  | "MOTOR_OVERLOAD", "GUARD_OPEN" or ""       |
| `ns=2;s=PRESS-01.AlarmActive`  | Boolean |                                            |

A variable is written only when its value changes, with Source- and ServerTimestamp = now (UTC).
Timestamps strictly increase across all writes of one server, so a client that sorts the
notifications by SourceTimestamp recovers the order they were written in. At one tick the
order is: Good, Reject, Temperature, alarm cleared (AlarmActive then AlarmCode), StateReason,
State, alarm raised (AlarmCode then AlarmActive). Counts are made during a tick in the state that
held during it, so every Good/Reject change is stamped while State (in that order) is RUNNING,
and the counts at a state change are the ones stamped just before the State write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from cryptography import x509

from equipment_bridge.simulators.model import Alarm, Snapshot

NAMESPACE_URI = "urn:mes:simulator"
ENDPOINT_PATH = "/mes/sim"

_VARIABLES: tuple[tuple[str, ua.VariantType], ...] = (
    ("State", ua.VariantType.Int32),
    ("StateReason", ua.VariantType.String),
    ("Good", ua.VariantType.UInt32),
    ("Reject", ua.VariantType.UInt32),
    ("Temperature", ua.VariantType.Double),
    ("AlarmCode", ua.VariantType.String),
    ("AlarmActive", ua.VariantType.Boolean),
)
_ONE_MICROSECOND = timedelta(microseconds=1)


def _values(snap: Snapshot) -> dict[str, Any]:
    return {
        "State": int(snap.state),
        "StateReason": snap.reason_text,
        "Good": snap.good,
        "Reject": snap.reject,
        "Temperature": snap.temperature,
        "AlarmCode": snap.alarm_code,
        "AlarmActive": snap.alarm is not Alarm.NONE,
    }


def _write_order(previous: Snapshot, current: Snapshot) -> tuple[str, ...]:
    head = ("Good", "Reject", "Temperature")
    state = ("StateReason", "State")
    if previous.alarm is not Alarm.NONE and current.alarm is Alarm.NONE:
        return (*head, "AlarmActive", "AlarmCode", *state)
    return (*head, *state, "AlarmCode", "AlarmActive")


@dataclass(frozen=True)
class PressSecurity:
    """Serve Basic256Sha256 SignAndEncrypt only (no None endpoint) with this certificate and
    private key (DER or PEM), and accept only clients whose certificate is one of the `.der` /
    `.pem` files in the `trusted` directory (also checked: validity dates, key usage, and that
    the client's application URI is the one in its certificate). The server's application URI
    is taken from its certificate's subjectAltName."""

    certificate: Path
    private_key: Path
    trusted: Path


class PressServer:
    """The OPC UA server of one press. `start()`, then `publish()` snapshots, then `stop()`."""

    def __init__(self, equipment_code: str, security: PressSecurity | None = None) -> None:
        self.equipment_code = equipment_code
        self.security = security
        self.endpoint = ""
        self._server = Server()
        self._ns = 0
        self._nodeids: dict[str, ua.NodeId] = {}
        self._types = dict(_VARIABLES)
        self._shown: Snapshot | None = None
        self._last_stamp = ua.DateTime(1, 1, 1, tzinfo=UTC)

    async def start(self, host: str, port: int, first: Snapshot) -> str:
        """Builds the address space with `first`'s values and listens; returns the endpoint URL.

        Port 0 binds a free port (the returned endpoint names the real one).
        """
        # The standard address space is filled in a worker thread (about 2 s on a small VM),
        # so the Modbus server can come up meanwhile.
        server = self._server
        await server.init()
        server.set_endpoint(f"opc.tcp://{host}:{port}{ENDPOINT_PATH}")
        server.set_server_name("MES simulator")
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._secure(self.security)
        self._ns = await server.register_namespace(NAMESPACE_URI)
        code = self.equipment_code
        press = await server.nodes.objects.add_object(self._nodeid(code), self._name(code))
        stamp = self._stamp()
        for name, value in _values(first).items():
            nodeid = self._nodeid(f"{code}.{name}")
            variant = ua.Variant(value, self._types[name])
            await press.add_variable(nodeid, self._name(name), variant)
            await server.write_attribute_value(
                nodeid, ua.DataValue(variant, SourceTimestamp=stamp, ServerTimestamp=stamp)
            )
            self._nodeids[name] = nodeid
        self._shown = first
        await server.start()
        bound = server.bserver.port if server.bserver is not None else port
        self.endpoint = f"opc.tcp://{host}:{bound}{ENDPOINT_PATH}"
        return self.endpoint

    async def _secure(self, security: PressSecurity) -> None:
        server = self._server
        await server.load_certificate(str(security.certificate))
        await server.load_private_key(str(security.private_key))
        certificate = server.iserver.certificate
        assert certificate is not None
        with contextlib.suppress(x509.ExtensionNotFound):
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
            if uris:
                await server.set_application_uri(uris[0])
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        trust_store = TrustStore([security.trusted], [])
        await trust_store.load()
        server.set_certificate_validator(
            CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                trust_store,
            )
        )

    def _nodeid(self, name: str) -> ua.NodeId:
        return ua.NodeId(ua.String(name), ua.Int16(self._ns))

    def _name(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self._ns)

    def _stamp(self) -> ua.DateTime:
        stamp = max(ua.DateTime.now(UTC), self._last_stamp + _ONE_MICROSECOND)
        self._last_stamp = stamp
        return stamp

    async def publish(self, snap: Snapshot) -> None:
        """Writes the variables whose values differ from the last published snapshot."""
        previous = self._shown
        if previous is None or snap == previous:
            return
        old, new = _values(previous), _values(snap)
        for name in _write_order(previous, snap):
            if old[name] == new[name]:
                continue
            stamp = self._stamp()
            await self._server.write_attribute_value(
                self._nodeids[name],
                ua.DataValue(
                    ua.Variant(new[name], self._types[name]),
                    SourceTimestamp=stamp,
                    ServerTimestamp=stamp,
                ),
            )
        self._shown = snap

    async def stop(self) -> None:
        # asyncua's stop() waits for its once-a-second ServerStatus clock to wake up (up to 1 s
        # of a SIGTERM's shutdown); the clock holds no state, so cancel it instead.
        clock = self._server.iserver.time_task
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            self._server.iserver.time_task = None
        await self._server.stop()


class _DropExpected(logging.Filter):
    """Drops the library's log lines about conditions the simulators report themselves."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self._fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(fragment in message for fragment in self._fragments)


def quiet_library_logs() -> None:
    """A None-only server warns at every start that it cannot sign (expected here), and a failed
    bind is logged with a traceback by asyncua and as a warning by pymodbus although the
    simulators report it in one line. Idempotent."""
    for name, fragments in (
        ("asyncua.server.server", ("No signing policy", "No encrypting policy", "error starting")),
        ("pymodbus.logging", ("Failed to start server",)),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) for f in logger.filters):
            logger.addFilter(_DropExpected(*fragments))
