"""OPC UA security (Basic256Sha256) between the bridge's connector and the press simulator
served with certificates on loopback: a real asyncua server, client and handshake; the
certificates are made here, throwaway, with `cryptography`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from equipment_bridge.app import Pipeline
from equipment_bridge.config import BridgeConfigError, OpcUaEquipment, load_config, parse_config
from equipment_bridge.connectors.opcua import OpcUaConnector
from equipment_bridge.outbox import Outbox
from equipment_bridge.simulators.model import Alarm, MachineState, Reason, Snapshot
from equipment_bridge.simulators.opcua_press import PressSecurity, PressServer

CODE = "PRESS-01"
BRIDGE_URI = "urn:mes:test:bridge"
PRESS_URI = "urn:mes:test:press"
CONNECTOR_LOG = "equipment_bridge.connectors.opcua"
FIRST = Snapshot(MachineState.RUNNING, Reason.NONE, 100, 3, 24.5, Alarm.NONE, tick=0)


# ---------------------------------------------------------------- throwaway PKI


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def make_pair(
    folder: Path, name: str, uri: str, usage: x509.ObjectIdentifier, *, days: tuple[int, int]
) -> Pair:
    """A self-signed OPC UA application certificate (RSA 2048, the application URI in the
    subjectAltName, the key usages OPC UA asks for), DER, and its key, PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    names = [x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname())]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = Pair(folder / f"{name}.der", folder / f"{name}.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@dataclass(frozen=True)
class Pki:
    press: Pair  # the simulator's
    bridge: Pair  # trusted by the simulator
    stranger: Pair  # a client certificate the simulator does not trust
    impostor: Pair  # another server's
    expired_press: Pair
    expired_bridge: Pair
    trusted: Path  # the simulator's trusted client certificates


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    valid, expired = (-1, 30), (-60, -1)
    pki = Pki(
        press=make_pair(folder, "press", PRESS_URI, server, days=valid),
        bridge=make_pair(folder, "bridge", BRIDGE_URI, client, days=valid),
        stranger=make_pair(folder, "stranger", BRIDGE_URI, client, days=valid),
        impostor=make_pair(folder, "impostor", PRESS_URI, server, days=valid),
        expired_press=make_pair(folder, "expired-press", PRESS_URI, server, days=expired),
        expired_bridge=make_pair(folder, "expired-bridge", BRIDGE_URI, client, days=expired),
        trusted=folder / "trusted",
    )
    pki.trusted.mkdir()
    shutil.copy(pki.bridge.cert, pki.trusted / "bridge.der")
    shutil.copy(pki.expired_bridge.cert, pki.trusted / "expired-bridge.der")
    return pki


# ---------------------------------------------------------------- servers and the bridge


@contextlib.asynccontextmanager
async def serve(security: PressSecurity | None) -> AsyncIterator[PressServer]:
    server = PressServer(CODE, security)
    await server.start("127.0.0.1", 0, FIRST)
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def press(pki: Pki) -> AsyncIterator[PressServer]:
    """The press serving Basic256Sha256 SignAndEncrypt only, trusting the bridge."""
    async with serve(PressSecurity(pki.press.cert, pki.press.key, pki.trusted)) as server:
        yield server


@pytest.fixture
def outboxes(tmp_path: Path) -> Iterator[Callable[[str], Outbox]]:
    made: list[Outbox] = []

    def make(name: str) -> Outbox:
        made.append(Outbox(tmp_path / f"{name}.sqlite"))
        return made[-1]

    yield make
    for box in made:
        box.close()


@pytest.fixture
def outbox(outboxes: Callable[[str], Outbox]) -> Outbox:
    return outboxes("outbox")


@pytest.fixture
async def run(
    outboxes: Callable[[str], Outbox],  # closed after the connectors stop
) -> AsyncIterator[Callable[[OpcUaEquipment, Outbox], OpcUaConnector]]:
    """Starts a connector into an outbox; all are stopped (and must not have ended) after."""
    tasks: list[asyncio.Task[None]] = []

    def start(eq: OpcUaEquipment, outbox: Outbox) -> OpcUaConnector:
        connector = OpcUaConnector(eq, Pipeline(eq, outbox))
        tasks.append(asyncio.create_task(connector.run()))
        return connector

    yield start
    ended = [task for task in tasks if task.done()]
    for task in tasks:
        # Python 3.11's asyncio.wait_for (all over asyncua) loses a cancellation that arrives
        # as the awaited call completes, and the connector then goes on: cancel until it ends.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
    for task in ended:
        raise AssertionError(f"a connector ended: {task.exception()!r}")  # only by cancelling


def bridge_press(
    endpoint: str, security: dict[str, Any] | None, code: str = CODE
) -> OpcUaEquipment:
    equipment: dict[str, Any] = {
        "code": code,
        "protocol": "opcua",
        "endpoint": endpoint,
        # A server that cannot decrypt the handshake stays silent until this timeout.
        "request_timeout_s": 1.0,
        "watchdog_s": 0.5,
        "reconnect_max_delay_s": 0.5,
        "backoff": {"base_s": 0.1, "cap_s": 0.3},
        "subscription": {"publishing_ms": 50, "keepalive_count": 10, "lifetime_count": 30},
        "signals": {
            "state": {
                "kind": "STATE",
                "node": "ns=2;s=PRESS-01.State",
                "map": {1: "RUNNING", 2: "IDLE", 3: "DOWN", 4: "PLANNED_STOP", 5: "SETUP"},
                "reason_node": "ns=2;s=PRESS-01.StateReason",
            },
            "good": {"kind": "COUNTER", "node": "ns=2;s=PRESS-01.Good", "counter": "good"},
            "reject": {"kind": "COUNTER", "node": "ns=2;s=PRESS-01.Reject", "counter": "reject"},
        },
    }
    if security is not None:
        equipment["security"] = security
    config = parse_config(
        {
            "bridge": {
                "id": "t",
                "outbox": {"path": "x.sqlite"},
                "mes": {"url": "http://127.0.0.1/graphql", "token_env": "T"},
            },
            "equipment": [equipment],
        },
        {},
    )
    eq = config.equipment[0]
    assert isinstance(eq, OpcUaEquipment)
    return eq


def security(client: Pair, server_cert: Path | None, **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"cert": str(client.cert), "key": str(client.key), **extra}
    if server_cert is not None:
        block["server_cert"] = str(server_cert)
    return block


def bodies(outbox: Outbox) -> list[dict[str, Any]]:
    return [p.body for p in outbox.peek(100_000)]


def comm(outbox: Outbox) -> list[tuple[bool, str | None]]:
    return [
        (b["alarmActive"], b.get("message"))
        for b in bodies(outbox)
        if b["kind"] == "ALARM" and b["alarmCode"] == "COMM_LOSS"
    ]


def machine_data(outbox: Outbox) -> list[dict[str, Any]]:
    return [b for b in bodies(outbox) if b["kind"] in ("STATE", "COUNTER")]


def states(outbox: Outbox) -> list[tuple[str, str | None]]:
    return [(b["state"], b.get("reason")) for b in bodies(outbox) if b["kind"] == "STATE"]


def total(outbox: Outbox, counter: str) -> int:
    return sum(
        b["increment"] for b in bodies(outbox) if b["kind"] == "COUNTER" and b["counter"] == counter
    )


def warnings(caplog: pytest.LogCaptureFixture, code: str, fragment: str) -> list[str]:
    """The connector's warnings about machine `code` that contain `fragment`."""
    return [
        message
        for r in caplog.records
        if r.name == CONNECTOR_LOG
        and r.levelno == logging.WARNING
        and (message := r.getMessage()).startswith(f"{code}: ")
        and fragment in message
    ]


async def until(check: Callable[[], bool], within: float = 8.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.02)


async def fails_loudly(
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
    connector: OpcUaConnector,
    *reason: str,
    attempts: int = 3,
) -> str:
    """The link is reported down with `reason` in the alarm, logged as a warning at every
    attempt (several: it keeps trying), and no data came through. Returns the alarm text."""
    await until(lambda: comm(outbox) != [], what="COMM_LOSS")
    ((active, message),) = comm(outbox)
    assert active
    assert message is not None
    assert message.startswith(f"cannot connect to {connector.eq.endpoint}: ")
    for fragment in reason:
        assert fragment in message
    code = connector.eq.code
    await until(
        lambda: len(warnings(caplog, code, reason[0])) >= attempts, what=f"{attempts} warnings"
    )
    assert connector.client is None
    assert machine_data(outbox) == []
    return message


# ---------------------------------------------------------------- (a) a secured session


async def test_signs_and_encrypts_and_delivers_states_and_counts(
    pki: Pki,
    press: PressServer,
    outbox: Outbox,
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
) -> None:
    # The simulator offers Basic256Sha256 SignAndEncrypt and nothing else to fall back to.
    plain = Client(press.endpoint, timeout=2)
    endpoints = await plain.connect_and_get_server_endpoints()
    assert {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints} == {
        (SecurityPolicyBasic256Sha256.URI, ua.MessageSecurityMode.SignAndEncrypt)
    }
    with pytest.raises(ua.UaError):  # a None session is turned away
        await plain.connect()

    await press.publish(FIRST)  # whatever another test left on the shared server
    eq = bridge_press(press.endpoint, security(pki.bridge, pki.press.cert, app_uri=BRIDGE_URI))
    connector = run(eq, outbox)
    await until(lambda: states(outbox) == [("RUNNING", None)], what="the first state")
    client = connector.client
    assert client is not None
    assert client.security_policy.URI == SecurityPolicyBasic256Sha256.URI
    assert client.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt

    await press.publish(Snapshot(MachineState.RUNNING, Reason.NONE, 107, 4, 24.5, Alarm.NONE, 1))
    await press.publish(Snapshot(MachineState.DOWN, Reason.JAM, 109, 4, 24.5, Alarm.NONE, 2))
    await until(lambda: (total(outbox, "good"), total(outbox, "reject")) == (9, 1))
    await until(lambda: states(outbox) == [("RUNNING", None), ("DOWN", "Jam")])
    assert comm(outbox) == []


async def test_app_uri_and_server_certificate_default_to_the_certificates(
    pki: Pki,
    press: PressServer,
    outbox: Outbox,
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
) -> None:
    # No app_uri (taken from the bridge certificate: the server checks it) and no server_cert
    # (the certificate the server lists with its endpoints).
    connector = run(bridge_press(press.endpoint, security(pki.bridge, None)), outbox)
    await until(lambda: len(machine_data(outbox)) >= 1, what="a first state")
    assert connector.client is not None
    assert connector.client.application_uri == BRIDGE_URI
    assert connector.client.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
    assert comm(outbox) == []


# ---------------------------------------------------------------- (b) failing loudly


async def test_an_untrusted_bridge_certificate_is_refused_and_retried(
    pki: Pki,
    press: PressServer,
    outbox: Outbox,
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    connector = run(bridge_press(press.endpoint, security(pki.stranger, pki.press.cert)), outbox)
    await fails_loudly(
        outbox,
        caplog,
        connector,
        f"the server does not trust the bridge certificate {pki.stranger.cert}",
        "BadCertificateUntrusted",
    )


async def test_a_server_certificate_that_is_not_the_servers_is_named_and_retried(
    pki: Pki,
    press: PressServer,
    outbox: Outbox,
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    pinned = tmp_path / "press.der"
    shutil.copy(pki.impostor.cert, pinned)
    connector = run(bridge_press(press.endpoint, security(pki.bridge, pinned)), outbox)
    # The server cannot decrypt the handshake and goes silent; the bridge finds out why.
    message = await fails_loudly(
        outbox, caplog, connector, f"is not security.server_cert {pinned}", attempts=2
    )
    assert "the server's certificate (CN=press, SHA-1 " in message
    assert "(CN=impostor, SHA-1 " in message

    # Someone puts the right certificate in place: the next attempt connects.
    shutil.copy(pki.press.cert, pinned)
    await until(lambda: [up for up, _ in comm(outbox)] == [True, False], what="link up")
    await until(lambda: len(machine_data(outbox)) >= 1, what="a first state")


async def test_an_expired_server_certificate_is_refused(
    pki: Pki,
    outboxes: Callable[[str], Outbox],
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secured = PressSecurity(pki.expired_press.cert, pki.expired_press.key, pki.trusted)
    async with serve(secured) as press:
        pinned, listed = outboxes("pinned"), outboxes("listed")
        # Pinned in the config (checked before connecting), and taken from the server's
        # endpoint list (checked when the server presents it).
        eq = bridge_press(press.endpoint, security(pki.bridge, pki.expired_press.cert))
        first = run(eq, pinned)
        eq = bridge_press(press.endpoint, security(pki.bridge, None), code="PRESS-02")
        second = run(eq, listed)
        expired = f"the server certificate {pki.expired_press.cert} expired on "
        await fails_loudly(pinned, caplog, first, expired)
        await fails_loudly(
            listed, caplog, second, "the server certificate (CN=expired-press, SHA-1 "
        )


async def test_a_server_without_security_is_never_used_without_it(
    pki: Pki,
    outboxes: Callable[[str], Outbox],
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(None) as press:
        pinned, listed = outboxes("pinned"), outboxes("listed")
        eq = bridge_press(press.endpoint, security(pki.bridge, pki.press.cert))
        first = run(eq, pinned)
        eq = bridge_press(press.endpoint, security(pki.bridge, None), code="PRESS-02")
        second = run(eq, listed)
        for outbox, connector in ((pinned, first), (listed, second)):
            await fails_loudly(
                outbox,
                caplog,
                connector,
                "the server offers no Basic256Sha256 SignAndEncrypt endpoint",
                attempts=2,
            )


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        pytest.param("expired", "the bridge certificate {expired} expired on ", id="expired"),
        pytest.param(
            "foreign key",
            "the private key {stranger_key} does not belong to the bridge certificate",
            id="foreign-key",
        ),
        pytest.param(
            "app_uri",
            "security.app_uri urn:other is not the application URI of the bridge",
            id="app-uri",
        ),
        pytest.param(
            "password",
            "environment variable MES_TEST_NO_SUCH_PASSWORD (security.key_password_env)",
            id="password",
        ),
    ],
)
async def test_a_bad_bridge_certificate_or_key_is_named_before_connecting(
    pki: Pki,
    press: PressServer,
    outbox: Outbox,
    run: Callable[[OpcUaEquipment, Outbox], OpcUaConnector],
    caplog: pytest.LogCaptureFixture,
    problem: str,
    reason: str,
) -> None:
    block = {
        "expired": security(pki.expired_bridge, pki.press.cert),
        "foreign key": {**security(pki.bridge, pki.press.cert), "key": str(pki.stranger.key)},
        "app_uri": security(pki.bridge, pki.press.cert, app_uri="urn:other"),
        "password": security(
            pki.bridge, pki.press.cert, key_password_env="MES_TEST_NO_SUCH_PASSWORD"
        ),
    }[problem]
    connector = run(bridge_press(press.endpoint, block), outbox)
    expected = reason.format(expired=pki.expired_bridge.cert, stranger_key=pki.stranger.key)
    await fails_loudly(outbox, caplog, connector, expected)


# ---------------------------------------------------------------- (c) the config


def test_the_config_refuses_certificate_files_that_do_not_exist(pki: Pki, tmp_path: Path) -> None:
    def config(block: dict[str, Any]) -> Path:
        path = tmp_path / "bridge.yaml"
        path.write_text(
            f"""
bridge:
  id: t
  outbox: {{path: x.sqlite}}
  mes: {{url: "http://127.0.0.1/graphql", token_env: T}}
equipment:
  - code: {CODE}
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:4840/mes/sim
    security: {block}
    signals:
      state: {{kind: STATE, node: "ns=2;s=PRESS-01.State", map: {{1: RUNNING}}}}
""",
            encoding="utf-8",
        )
        return path

    good = {"cert": str(pki.bridge.cert), "key": str(pki.bridge.key)}
    eq = load_config(config({**good, "server_cert": str(pki.press.cert)}), {}).equipment[0]
    assert isinstance(eq, OpcUaEquipment)
    assert eq.security is not None
    assert eq.security.server_cert == str(pki.press.cert)

    missing = tmp_path / "nowhere" / "bridge.der"
    for key in ("cert", "key", "server_cert"):
        path = config({**good, key: str(missing)})
        with pytest.raises(BridgeConfigError) as raised:
            load_config(path, {})
        assert str(raised.value) == (f"{path}: equipment.0.security.{key}: no such file: {missing}")
    # A relative path is taken from the working directory, and the message says which.
    with pytest.raises(BridgeConfigError) as raised:
        load_config(config({**good, "cert": "pki/bridge.der"}), {})
    assert str(raised.value).endswith(
        f"equipment.0.security.cert: no such file: pki/bridge.der (relative to {Path.cwd()})"
    )
