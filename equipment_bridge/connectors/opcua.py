"""OPC UA connector (asyncua 2.1): one client and one subscription per machine.

- Iterator mode (`sub.next_event`): a single consumer, so notifications keep their order
  (handler mode runs each notification in its own task and reorders them).
- `OverflowPolicy.DISCONNECT` with a large client queue: if the bridge ever falls behind,
  the client reconnects and the bridge re-reads every signal, instead of asyncua's default
  of silently dropping the oldest notifications.
- asyncua's supervisor reconnects an established session (reactivate, TransferSubscriptions,
  Republish); it never retries the *first* connect, so this connector owns that loop, with
  backoff, and also restarts the whole client if the supervisor gives up.
- After every (re)connect all signals are read once ("resync"): a recreated subscription
  reports only current values, and counters must be caught up from their cumulative value.
  Replayed or re-read values that are not newer than what was processed are dropped by the
  normaliser (source timestamps), and keep their derived event ids anyway.
- Connection loss is reported to the sink (`link(False)`) → ALARM COMM_LOSS, never DOWN.
- Security (`security:` in the config): Basic256Sha256 with the bridge's certificate, and only
  that; a failure (untrusted, expired or unexpected certificate, no such endpoint) is a
  link-down with its reason, logged as a warning, and retried; never a fallback to None.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from equipment_bridge.backoff import Retry
from equipment_bridge.config import (
    OpcUaAlarmSignal,
    OpcUaEquipment,
    OpcUaSecurity,
    OpcUaStateSignal,
)
from equipment_bridge.connectors.base import Sink
from equipment_bridge.events import Observation, utcnow

log = logging.getLogger(__name__)

# How long to wait after a reconnect before re-reading: asyncua reports CONNECTED before it
# has republished the notifications missed during the outage; those go first.
RESYNC_SETTLE_S = 0.5
# Notifications taken from the queue at most per sink call.
MAX_BATCH = 2000
# At most this long to ask a server for its endpoints after a secured connect failed.
PROBE_TIMEOUT_S = 2.0


class OpcUaSecurityError(Exception):
    """The secured connection cannot be made as configured; the message says why."""


# What a server's refusal means for the person reading the bridge's log.
_REFUSALS = {
    "BadCertificateUntrusted": "the server does not trust the bridge certificate {cert}",
    "BadCertificateTimeInvalid": "the server finds the bridge certificate {cert} out of date",
    "BadCertificateUriInvalid": "the server finds the application URI not in {cert}",
    "BadCertificateUseNotAllowed": "the server refuses the key usage of {cert}",
    "BadCertificateRevoked": "the server has revoked the bridge certificate {cert}",
    "BadCertificateInvalid": "the server finds the bridge certificate {cert} invalid",
    "BadSecurityChecksFailed": "the server rejected the secure channel",
}


def channels_of(eq: OpcUaEquipment) -> list[tuple[str, str]]:
    """(channel, node id) for every variable the machine's signals read."""
    out: list[tuple[str, str]] = []
    for name, sig in eq.signals.items():
        if isinstance(sig, OpcUaStateSignal):
            out.append((name, sig.node))
            if sig.reason_node:
                out.append((f"{name}#reason", sig.reason_node))
        elif isinstance(sig, OpcUaAlarmSignal):
            if sig.code_node:
                out.append((f"{name}#code", sig.code_node))
            if sig.active_node:
                out.append((f"{name}#active", sig.active_node))
        else:
            out.append((name, sig.node))
    return out


def _utc(ts: Any) -> dt.datetime | None:
    if not isinstance(ts, dt.datetime):
        return None
    if ts.year < 1700:  # OPC UA "no timestamp" (1601-01-01)
        return None
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _observation(channel: str, dv: ua.DataValue | None, replayed: bool) -> Observation | None:
    if dv is None:
        return None
    status = dv.StatusCode
    if status is not None and not status.is_good():
        return None
    value = dv.Value.Value if dv.Value is not None else None
    if value is None:
        return None
    return Observation(channel, value, utcnow(), _utc(dv.SourceTimestamp), replayed)


class OpcUaConnector:
    def __init__(self, eq: OpcUaEquipment, sink: Sink, *, tick_s: float = 1.0) -> None:
        self.eq = eq
        self.sink = sink
        self.tick_s = tick_s
        self.channels = channels_of(eq)
        self._retry = Retry(eq.backoff)
        self._resync_at: float | None = None
        self.client: Client | None = None

    # ------------------------------------------------------------ client

    async def _new_client(self) -> Client:
        eq = self.eq
        client = Client(
            eq.endpoint,
            timeout=eq.request_timeout_s,
            watchdog_intervall=eq.watchdog_s,
        )
        client.name = f"mes-bridge {eq.code}"
        if eq.security is not None:
            await self._secure(client, eq.security)
        return client

    async def _secure(self, client: Client, sec: OpcUaSecurity) -> None:
        """Basic256Sha256 only. asyncua merely logs a bridge certificate that is expired or
        does not name the application URI, and accepts any server certificate it is given:
        here each of these is an OpcUaSecurityError."""
        password = None
        if sec.key_password_env:
            password = os.environ.get(sec.key_password_env)
            if not password:
                raise OpcUaSecurityError(
                    f"environment variable {sec.key_password_env} (security.key_password_env) "
                    "is not set"
                )
        cert = _pki_file(sec.cert, "security.cert")
        key_file = _pki_file(sec.key, "security.key", password)
        own = await _loaded(
            uacrypto.load_certificate(cert.path_or_content, cert.extension),
            f"security.cert {sec.cert}",
        )
        key = await _loaded(
            uacrypto.load_private_key(key_file.path_or_content, password, key_file.extension),
            f"security.key {sec.key}",
        )
        if _public(own.public_key()) != _public(key.public_key()):
            raise OpcUaSecurityError(
                f"the private key {sec.key} does not belong to the bridge certificate {sec.cert}"
            )
        _check_dates(own, f"the bridge certificate {sec.cert}")
        uris = _uris(own)
        app_uri = sec.app_uri or (uris[0] if uris else None)
        if app_uri is None:
            raise OpcUaSecurityError(
                f"the bridge certificate {sec.cert} has no application URI in its subjectAltName"
            )
        if app_uri not in uris:
            raise OpcUaSecurityError(
                f"security.app_uri {app_uri} is not the application URI of the bridge "
                f"certificate {sec.cert} ({', '.join(uris) or 'none'})"
            )
        client.application_uri = app_uri
        server_cert = None
        if sec.server_cert is not None:
            server_cert = _pki_file(sec.server_cert, "security.server_cert")
            pinned = await _loaded(
                uacrypto.load_certificate(server_cert.path_or_content, server_cert.extension),
                f"security.server_cert {sec.server_cert}",
            )
            _check_dates(pinned, f"the server certificate {sec.server_cert}")
        # Without server_cert, set_security asks the server for its endpoints first (over a
        # None channel, for discovery only) and takes the certificate of the matching one.
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=cert,
            private_key=key_file,
            private_key_password=password,
            server_certificate=server_cert,
            mode=getattr(ua.MessageSecurityMode, sec.mode),
        )
        # Called at every CreateSession with the certificate the server presents.
        client.certificate_validator = _check_server_certificate

    async def _connect_failure(self, error: Exception) -> tuple[str, bool]:
        """Why a connect failed, and whether that is routine (refused or unreachable, as while
        a machine is off: logged at INFO) or needs a person (security, certificates, a bad
        endpoint: WARNING)."""
        sec = self.eq.security
        if isinstance(error, OpcUaSecurityError):
            return str(error), False
        routine = isinstance(error, OSError | TimeoutError)
        if sec is None or isinstance(error, ConnectionRefusedError):
            return _why(error), routine
        if isinstance(error, UaStatusCodeError):
            name = type(error).__name__
            refusal = _REFUSALS.get(name)
            if refusal is not None:
                return f"{refusal.format(cert=sec.cert)} ({name})", False
            return _why(error), routine
        found = await self._diagnose(sec)
        if found is not None:
            return f"{found} ({_why(error)})", False
        return _why(error), routine

    async def _diagnose(self, sec: OpcUaSecurity) -> str | None:
        """Why a secured connect may have failed, from the server's endpoint list: a server
        that cannot decrypt the handshake (the pinned certificate is not its own) just stops
        answering, and the connect times out without saying why."""
        probe = Client(self.eq.endpoint, timeout=min(self.eq.request_timeout_s, PROBE_TIMEOUT_S))
        try:
            endpoints = await probe.connect_and_get_server_endpoints()
        except Exception:
            return None
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        offered = [
            e
            for e in endpoints
            if e.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI and e.SecurityMode == mode
        ]
        if not offered:
            return f"the server offers no Basic256Sha256 {sec.mode} endpoint"
        if sec.server_cert is None:
            return None
        try:
            file = _pki_file(sec.server_cert, "security.server_cert")
            pinned_cert: x509.Certificate = await uacrypto.load_certificate(
                file.path_or_content, file.extension
            )
        except (OpcUaSecurityError, ValueError):
            return None  # reported by the next attempt
        pinned = pinned_cert.public_bytes(serialization.Encoding.DER)
        presented = offered[0].ServerCertificate or b""
        if presented.startswith(pinned):  # the server's certificate, then its chain
            return None
        return (
            f"the server's certificate ({_describe(_leaf(presented))}) is not "
            f"security.server_cert {sec.server_cert} ({_describe(pinned)})"
        )

    async def _close(self, client: Client) -> None:
        # Not wait_for: it waits for the cancelled call to end, and a disconnect from a dead
        # server may not end; this one is left behind after 2 s.
        closing = asyncio.ensure_future(client.disconnect())
        done, _ = await asyncio.wait({closing}, timeout=2.0)
        if not done:
            closing.cancel()
        elif not closing.cancelled():
            closing.exception()  # retrieved: a failed disconnect is of no interest

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connects (retrying with backoff), subscribes and forwards, until cancelled."""
        while True:
            _stop_if_cancelled()
            try:
                client = await self._new_client()
                await client.connect(
                    auto_reconnect=True,
                    reconnect_max_delay=self.eq.reconnect_max_delay_s,
                    reconnect_request_timeout=max(self.eq.request_timeout_s, 5.0),
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:  # refused, timeout, security, bad endpoint, ...
                reason, routine = await self._connect_failure(error)
                detail = f"cannot connect to {self.eq.endpoint}: {reason}"
                await self.sink.link(False, detail)
                delay = self._retry.next_delay()
                log.log(
                    logging.INFO if routine else logging.WARNING,
                    "%s: %s; next attempt in %.1f s",
                    self.eq.code,
                    detail,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self.client = client
            try:
                await self._session(client)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("%s: OPC UA session ended: %s", self.eq.code, _why(error))
                await self.sink.link(False, f"{self.eq.endpoint}: {_why(error)}")
            finally:
                self.client = None
                await self._close(client)
            await asyncio.sleep(self._retry.next_delay())

    async def _session(self, client: Client) -> None:
        eq, subcfg = self.eq, self.eq.subscription
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=subcfg.publishing_ms,
            RequestedMaxKeepAliveCount=subcfg.keepalive_count,
            RequestedLifetimeCount=subcfg.lifetime_count,
            MaxNotificationsPerPublish=10_000,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = await client.create_subscription(
            params, queue_maxsize=subcfg.client_queue, overflow=OverflowPolicy.DISCONNECT
        )
        by_node: dict[str, list[str]] = {}
        nodes: list[tuple[str, Node]] = []
        for channel, node_id in self.channels:
            try:
                node = client.get_node(node_id)
            except Exception as error:
                await self.sink.config_error(
                    channel.split("#")[0], f"bad node id {node_id!r}: {error}"
                )
                continue
            nodes.append((channel, node))
        results = await sub.subscribe_data_change(
            [n for _, n in nodes],
            queuesize=subcfg.queue_size,
            sampling_interval=ua.Double(subcfg.sampling_ms),
        )
        good: list[tuple[str, Node]] = []
        for (channel, node), result in zip(nodes, results, strict=True):
            if isinstance(result, ua.StatusCode):
                await self.sink.config_error(
                    channel.split("#")[0], f"node {node.nodeid.to_string()}: {result.name}"
                )
                continue
            good.append((channel, node))
            by_node.setdefault(node.nodeid.to_string(), []).append(channel)
        await self._resync(client, good)
        self._retry.reset()
        log.info("%s: connected to %s, %d variables subscribed", eq.code, eq.endpoint, len(good))
        watcher = asyncio.create_task(self._watch_state(client), name=f"opcua-state {eq.code}")
        try:
            await self._consume(client, sub, good, by_node, watcher)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher

    async def _watch_state(self, client: Client) -> None:
        """Link loss and restore from asyncua's connection supervisor (which keeps retrying:
        a lost transport goes DISCONNECTED, then RECONNECTING until CONNECTED again)."""
        async with client.subscribe_state() as states:
            while True:
                state = await states.next_change()
                if state in (UaClientState.RECONNECTING, UaClientState.DISCONNECTED):
                    await self.sink.link(
                        False, f"{self.eq.endpoint}: connection lost ({state.value})"
                    )
                elif state is UaClientState.CONNECTED:
                    # Resync (and report the link up) once the republished backlog is in.
                    self._resync_at = time.monotonic() + RESYNC_SETTLE_S

    async def _consume(
        self,
        client: Client,
        sub: Subscription,
        nodes: Sequence[tuple[str, Node]],
        by_node: dict[str, list[str]],
        watcher: asyncio.Task[None],
    ) -> None:
        next_tick = time.monotonic() + self.tick_s
        while True:
            _stop_if_cancelled()
            if watcher.done():
                watcher.result()
                raise ConnectionError("lost track of the OPC UA client's state")
            now = time.monotonic()
            wait = next_tick - now
            if self._resync_at is not None:
                wait = min(wait, self._resync_at - now)
            event = await sub.next_event(timeout=max(0.0, wait)) if wait > 0 else None
            if event is not None:
                batch = [event]
                # Take what else is already queued: a publish response arrives as a burst.
                while len(batch) < MAX_BATCH:
                    more = await sub.next_event(timeout=0.002)
                    if more is None:
                        break
                    batch.append(more)
                await self._deliver(batch, by_node)
            now = time.monotonic()
            if self._resync_at is not None and now >= self._resync_at:
                self._resync_at = None
                if client.state is UaClientState.CONNECTED:
                    try:
                        await self._resync(client, nodes)
                    except (ConnectionError, TimeoutError, UaError) as error:
                        log.info("%s: resync read failed (%s); retrying", self.eq.code, _why(error))
                        self._resync_at = time.monotonic() + 1.0
            if now >= next_tick:
                next_tick = now + self.tick_s
                await self.sink.tick()

    async def _deliver(self, batch: Sequence[SubEvent], by_node: dict[str, list[str]]) -> None:
        observations: list[Observation] = []
        for event in batch:
            if isinstance(event, DataChangeEvent):
                dv = event.data.monitored_item.Value
                for channel in by_node.get(event.node.nodeid.to_string(), ()):
                    obs = _observation(channel, dv, event.replayed)
                    if obs is not None:
                        observations.append(obs)
            elif isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                log.warning("%s: subscription status %s", self.eq.code, status)
                if not status.is_good():
                    self._resync_at = time.monotonic() + RESYNC_SETTLE_S
        if observations:
            await self.sink.observe(observations)

    async def _resync(self, client: Client, nodes: Sequence[tuple[str, Node]]) -> None:
        """Reads every signal once and reports the link up."""
        if nodes:
            values = await client.read_attributes([n for _, n in nodes])
            observations = [
                obs
                for (channel, _), dv in zip(nodes, values, strict=True)
                if (obs := _observation(channel, dv, False)) is not None
            ]
            if observations:
                await self.sink.observe(observations)
        await self.sink.link(True)


def _pki_file(path: str, what: str, password: str | None = None) -> uacrypto.CertProperties:
    """A certificate or key file's content, read here: asyncua opens files in a worker thread
    and leaves one open when the connector is cancelled meanwhile."""
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise OpcUaSecurityError(f"cannot read {what} {path}: {error.strerror or error}") from None
    kind = "pem" if content.lstrip().startswith(b"-----BEGIN") else "der"
    return uacrypto.CertProperties(content, kind, password)


async def _loaded(load: Awaitable[Any], what: str) -> Any:
    """A certificate or key parsed by asyncua, or an OpcUaSecurityError naming the file."""
    try:
        return await load
    except (ValueError, TypeError) as error:  # not a certificate or key, bad password
        raise OpcUaSecurityError(f"cannot load {what}: {_why(error)}") from None


def _public(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _check_dates(cert: x509.Certificate, what: str) -> None:
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        raise OpcUaSecurityError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise OpcUaSecurityError(
            f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )


async def _check_server_certificate(cert: x509.Certificate, _: ua.ApplicationDescription) -> None:
    # The pinned certificate was checked before connecting; this also covers a server
    # certificate taken from the endpoint list, and one that expires during a long run.
    _check_dates(cert, f"the server certificate ({_describe(cert)})")


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def _leaf(der: bytes) -> bytes:
    """The first certificate of a DER chain (a SEQUENCE with a two-byte length)."""
    if len(der) > 4 and der[:2] == b"\x30\x82":
        return der[: int.from_bytes(der[2:4], "big") + 4]
    return der


def _describe(cert: x509.Certificate | bytes) -> str:
    """Subject and SHA-1 thumbprint, as OPC UA tools show a certificate."""
    try:
        if isinstance(cert, bytes):
            cert = x509.load_der_x509_certificate(cert)
    except ValueError:
        return "unreadable"
    thumbprint = cert.fingerprint(hashes.SHA1()).hex()  # the identifier, not for security
    return f"{cert.subject.rfc4514_string()}, SHA-1 {thumbprint}"


def _why(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _stop_if_cancelled() -> None:
    """asyncua's `wait_for` calls can swallow a cancellation that arrives as they complete
    (Python 3.11); a loop that goes on would then never stop. A pending cancel ends it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
