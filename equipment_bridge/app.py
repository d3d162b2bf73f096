"""The bridge process: one connector per machine feeding the outbox, one forwarder draining it.

    connector (OPC UA / Modbus) → Pipeline (normaliser → outbox commit) → Forwarder → MES

Each machine's connector runs under a supervisor that restarts it (with backoff) if it ever
dies, so one misbehaving machine cannot stop the others or the forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from equipment_bridge.backoff import Retry
from equipment_bridge.config import (
    Backoff,
    BridgeConfig,
    BridgeConfigError,
    ModbusEquipment,
    OpcUaEquipment,
    load_config,
    read_token,
)
from equipment_bridge.connectors.modbus import ModbusConnector
from equipment_bridge.connectors.opcua import OpcUaConnector
from equipment_bridge.events import Observation, utcnow
from equipment_bridge.forwarder import Forwarder
from equipment_bridge.normalizer import Changes, Normalizer
from equipment_bridge.outbox import Outbox, OutboxError

log = logging.getLogger("equipment_bridge")

STATUS_EVERY_S = 60.0


class Pipeline:
    """One machine's sink: normalises a batch and commits its events (and the normaliser's
    persistent state) to the outbox before returning. Calls are serialised per machine."""

    def __init__(
        self,
        equipment: OpcUaEquipment | ModbusEquipment,
        outbox: Outbox,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.equipment = equipment
        self.code = equipment.code
        self.outbox = outbox
        self._notify = notify
        self._lock = asyncio.Lock()
        self.normalizer = Normalizer(equipment, outbox.load_state(equipment.code))

    async def _commit(self, changes: Changes) -> None:
        if not changes:
            return
        state = {(self.code, key): row for key, row in changes.state.items()}
        write = asyncio.ensure_future(
            asyncio.to_thread(self.outbox.append, changes.events, state, changes.quarantined)
        )
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # The write goes on in its thread: let it finish so memory matches the disk.
            with contextlib.suppress(BaseException):
                await write
            if write.done() and not write.cancelled() and write.exception() is None:
                self.normalizer.commit(changes)
            raise
        except BaseException:
            # Not on disk: start again from what is.
            self.normalizer = Normalizer(self.equipment, self.outbox.load_state(self.code))
            raise
        self.normalizer.commit(changes)
        if changes.events:
            self._notify()

    async def observe(self, batch: Sequence[Observation]) -> None:
        async with self._lock:
            await self._commit(self.normalizer.process(batch))

    async def link(self, up: bool, detail: str = "") -> None:
        async with self._lock:
            await self._commit(self.normalizer.link(up, utcnow(), detail))

    async def tick(self) -> None:
        async with self._lock:
            await self._commit(self.normalizer.tick(utcnow()))

    async def config_error(self, signal: str, detail: str) -> None:
        async with self._lock:
            await self._commit(self.normalizer.config_error(signal, detail, utcnow()))


async def supervise(name: str, start: Callable[[], Awaitable[None]], backoff: Backoff) -> None:
    """Runs `start()` again (after a backoff) whenever it ends or fails, until cancelled."""
    retry = Retry(backoff)
    while True:
        try:
            await start()
            log.warning("%s stopped; restarting", name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting", name)
        await asyncio.sleep(retry.next_delay())


SHUTDOWN_S = 5.0
DRAIN_S = 3.0  # at a planned stop, how long the forwarder may go on sending


async def _stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancels the tasks and waits for them, at most SHUTDOWN_S. Whatever a task was writing
    to the outbox is one transaction: a task that does not end in time (a library that
    ignores cancellation) loses nothing by it."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_S)
    for task in stuck:
        log.warning("%s did not stop in %.0f s; left behind", task.get_name(), SHUTDOWN_S)


async def _drained(outbox: Outbox, seconds: float) -> bool:
    """Whether the outbox empties within `seconds` (the forwarder still running)."""
    deadline = time.monotonic() + seconds
    while await asyncio.to_thread(outbox.pending_count):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Bridge:
    def __init__(
        self,
        config: BridgeConfig,
        token: str,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.token = token
        self._http_client = http_client
        self.outbox: Outbox | None = None
        self.forwarder: Forwarder | None = None
        self.pipelines: dict[str, Pipeline] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs until `stop` is set (or the task is cancelled); then shuts down cleanly."""
        cfg = self.config.bridge
        self.outbox = outbox = await asyncio.to_thread(
            Outbox, Path(cfg.outbox.path), cfg.outbox.max_events
        )
        forwarder = self.forwarder = Forwarder(
            outbox, cfg.mes, self.token, client=self._http_client
        )
        pending = await asyncio.to_thread(outbox.pending_count)
        log.info(
            "bridge %s started: %d machines, outbox %s (%d events waiting), MES %s",
            cfg.id,
            len(self.config.equipment),
            outbox.path,
            pending,
            cfg.mes.url,
        )
        restart = Backoff(base_s=1.0, cap_s=30.0)
        tasks = [
            asyncio.create_task(supervise("forwarder", forwarder.run, restart), name="forwarder"),
            asyncio.create_task(self._status(), name="status"),
        ]
        for eq in self.config.equipment:
            tasks.append(
                asyncio.create_task(
                    supervise(f"connector {eq.code}", self._connector(eq), restart),
                    name=f"connector {eq.code}",
                )
            )
        try:
            if stop is None:
                await asyncio.Future()
            else:
                await stop.wait()
        finally:
            # The machines first: nothing new enters the outbox. Then the forwarder has a
            # moment to send what they wrote last, so that a planned stop with the MES up
            # leaves nothing waiting; whatever is left stays in the outbox for the next start.
            await _stop_tasks(tasks[1:])
            await _drained(outbox, DRAIN_S)
            await _stop_tasks(tasks[:1])
            await forwarder.aclose()
            await asyncio.to_thread(outbox.close)
            log.info("bridge %s stopped", cfg.id)

    def _connector(self, eq: OpcUaEquipment | ModbusEquipment) -> Callable[[], Awaitable[None]]:
        async def start() -> None:
            assert self.outbox is not None
            assert self.forwarder is not None
            pipeline = Pipeline(eq, self.outbox, self.forwarder.notify)
            self.pipelines[eq.code] = pipeline
            if isinstance(eq, OpcUaEquipment):
                await OpcUaConnector(eq, pipeline).run()
            else:
                await ModbusConnector(eq, pipeline).run()

        return start

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            line = await self.status_line()
            if line:
                log.info("%s", line)

    async def status_line(self) -> str:
        """The periodic status: the outbox's fill level and thinning, sending, the links."""
        if self.outbox is None or self.forwarder is None:
            return ""
        capacity = await asyncio.to_thread(self.outbox.capacity)
        stats = self.forwarder.stats
        links = ", ".join(
            f"{code} {'up' if p.normalizer.connected else 'DOWN'}"
            for code, p in self.pipelines.items()
        )
        full = f" (OUTBOX FULL: {', '.join(capacity.full)})" if capacity.full else ""
        return (
            f"status: {capacity.events} events waiting (limit {capacity.max_events}), "
            f"{capacity.thinned} VALUE events thinned{full}; sent {stats.accepted} "
            f"(+{stats.duplicates} duplicates), {stats.quarantined} quarantined, "
            f"{stats.failures} failed attempts"
            f"{'; SENDING STOPPED: token refused' if self.forwarder.auth_blocked else ''}"
            f"; machines: {links}"
        )


def configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("equipment_bridge").setLevel(level)
    if level != "DEBUG":
        # The libraries log every failed reconnect attempt, some with a traceback; the
        # connectors report link loss and restore themselves, once per edge.
        for noisy in ("asyncua", "pymodbus"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
        logging.getLogger("httpx").setLevel(logging.WARNING)


async def run_bridge(config: BridgeConfig, token: str) -> None:
    """Runs the bridge until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await Bridge(config, token).run(stop)


def main(config_path: str) -> None:
    """Loads and checks the config (BridgeConfigError on any problem), then runs the bridge
    until SIGINT/SIGTERM."""
    config = load_config(config_path)
    token = read_token(config)
    try:
        Outbox(config.bridge.outbox.path).close()
    except OutboxError as error:
        raise BridgeConfigError(f"bridge.outbox.path: {error}") from None
    configure_logging(config.bridge.log_level)
    # Not asyncio.run: it waits for every task left at the end, and Bridge.run leaves behind
    # a task that does not stop (rather than hang on it).
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run_bridge(config, token))
    finally:
        loop.close()
