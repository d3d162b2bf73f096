"""Modbus TCP connector (pymodbus 3.16): polls register blocks at a fixed period.

The bridge owns reconnects: the client is built with `reconnect_delay=0` (pymodbus' own
reconnect off) and short `timeout`/`retries`, so a silent peer is noticed in seconds, not the
~96 s of the library defaults. A poll in which every read timed out counts as failed;
`failed_polls_offline` of them in a row, or a dropped socket, report the link lost
(→ ALARM COMM_LOSS) and the connector reconnects with backoff. One client per device, and
reads are grouped into blocks of at most 125 registers (one outstanding request per client).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from equipment_bridge.backoff import Retry
from equipment_bridge.config import (
    ModbusAlarmSignal,
    ModbusEquipment,
    ModbusStateSignal,
    Register,
)
from equipment_bridge.connectors.base import Sink
from equipment_bridge.events import Observation, utcnow

log = logging.getLogger(__name__)

MAX_REGISTERS = 125
# Registers of slack allowed inside one block rather than splitting it.
MAX_GAP = 16
DATATYPE = AsyncModbusTcpClient.DATATYPE
ILLEGAL_ADDRESS = 2


@dataclass(frozen=True)
class Block:
    table: Literal["holding", "input"]
    address: int
    count: int

    def covers(self, reg: Register) -> bool:
        return (
            reg.table == self.table
            and self.address <= reg.address
            and reg.address + reg.count <= self.address + self.count
        )


def channels_of(eq: ModbusEquipment) -> list[tuple[str, Register]]:
    """(channel, register) for everything the machine's signals read."""
    out: list[tuple[str, Register]] = []
    for name, sig in eq.signals.items():
        if isinstance(sig, ModbusStateSignal):
            out.append((name, sig))
            if sig.reason is not None:
                out.append((f"{name}#reason", sig.reason))
        elif isinstance(sig, ModbusAlarmSignal):
            if sig.code is not None:
                out.append((f"{name}#code", sig.code))
            if sig.active is not None:
                out.append((f"{name}#active", sig.active))
        else:
            out.append((name, sig))
    return out


def plan_blocks(registers: Sequence[Register]) -> list[Block]:
    """The fewest reads (≤125 registers each, small gaps bridged) covering all registers."""
    blocks: list[Block] = []
    for table in ("holding", "input"):
        spans = sorted((r.address, r.address + r.count) for r in registers if r.table == table)
        start: int | None = None
        end = 0
        for lo, hi in spans:
            if start is not None and lo <= end + MAX_GAP and max(hi, end) - start <= MAX_REGISTERS:
                end = max(end, hi)
                continue
            if start is not None:
                blocks.append(Block(table, start, end - start))
            start, end = lo, hi
        if start is not None:
            blocks.append(Block(table, start, end - start))
    return blocks


def decode(reg: Register, words: Sequence[int]) -> int | float:
    value = AsyncModbusTcpClient.convert_from_registers(
        list(words), DATATYPE[reg.type], word_order=reg.word_order
    )
    return cast(int | float, value)


class ModbusConnector:
    def __init__(self, eq: ModbusEquipment, sink: Sink, *, tick_s: float = 1.0) -> None:
        self.eq = eq
        self.sink = sink
        self.tick_s = tick_s
        self.channels = channels_of(eq)
        self.blocks = plan_blocks([r for _, r in self.channels])
        self._retry = Retry(eq.backoff)
        self._bad_blocks: set[Block] = set()

    def _client(self) -> AsyncModbusTcpClient:
        eq = self.eq
        return AsyncModbusTcpClient(
            eq.host,
            port=eq.port,
            timeout=eq.timeout_s,
            retries=eq.retries,
            reconnect_delay=0,
            name=eq.code,
        )

    async def run(self) -> None:
        """Connects (retrying with backoff) and polls until cancelled."""
        eq = self.eq
        while True:
            client = self._client()
            try:
                if not await client.connect():
                    detail = f"cannot connect to {eq.host}:{eq.port}"
                    await self.sink.link(False, detail)
                    delay = self._retry.next_delay()
                    log.info("%s: %s; next attempt in %.1f s", eq.code, detail, delay)
                    await asyncio.sleep(delay)
                    continue
                log.info("%s: connected to %s:%d", eq.code, eq.host, eq.port)
                try:
                    await self._poll(client)
                except (ConnectionException, ModbusIOException, OSError) as error:
                    await self.sink.link(False, f"{eq.host}:{eq.port}: {_why(error)}")
            finally:
                client.close()
            await asyncio.sleep(self._retry.next_delay())

    async def _poll(self, client: AsyncModbusTcpClient) -> None:
        eq = self.eq
        failed_polls = 0
        linked = False
        next_tick = time.monotonic() + self.tick_s
        while True:
            started = time.monotonic()
            words, answered = await self._read_blocks(client)
            if not client.connected:
                raise ConnectionException("the connection dropped")
            if answered:
                failed_polls = 0
                observations = self._observations(words)
                if observations:
                    await self.sink.observe(observations)
                if not linked:
                    linked = True
                    self._retry.reset()
                    await self.sink.link(True)
            else:
                failed_polls += 1
                if failed_polls >= eq.failed_polls_offline:
                    raise ConnectionException(
                        f"no answer in {failed_polls} polls (timeout {eq.timeout_s} s)"
                    )
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.tick_s
                await self.sink.tick()
            await asyncio.sleep(max(0.0, eq.poll_ms / 1000 - (time.monotonic() - started)))

    async def _read_blocks(
        self, client: AsyncModbusTcpClient
    ) -> tuple[dict[Block, list[int]], bool]:
        """Reads every block. `answered` is False when no block got any answer (timeouts)."""
        words: dict[Block, list[int]] = {}
        answered = not self.blocks
        for block in list(self.blocks):
            read = (
                client.read_holding_registers
                if block.table == "holding"
                else client.read_input_registers
            )
            try:
                response = await read(block.address, count=block.count, device_id=self.eq.device_id)
            except ModbusIOException:
                continue  # timed out after retries
            except ConnectionException:
                raise
            except ModbusException as error:
                answered = True
                self._block_problem(block, _why(error))
                continue
            answered = True
            if response.isError():
                code = getattr(response, "exception_code", None)
                if code == ILLEGAL_ADDRESS:
                    await self._illegal_address(block)
                else:
                    # The device is there but refuses this block for now (busy, failure, ...).
                    self._block_problem(block, f"exception code {code}")
                continue
            self._bad_blocks.discard(block)
            words[block] = list(response.registers)
        return words, answered

    async def _illegal_address(self, block: Block) -> None:
        """A register the device does not have: read the block's registers one signal at a
        time from now on, so that only the bad signals are lost (and reported)."""
        inside = [(c, r) for c, r in self.channels if block.covers(r)]
        index = self.blocks.index(block)
        if len(inside) > 1:
            singles = sorted(
                {Block(r.table, r.address, r.count) for _, r in inside}, key=lambda b: b.address
            )
            self.blocks[index : index + 1] = singles
            log.warning(
                "%s: %s registers %d-%d include an address the device does not have; "
                "reading them one by one",
                self.eq.code,
                block.table,
                block.address,
                block.address + block.count - 1,
            )
            return
        del self.blocks[index]
        for channel, reg in inside:
            await self.sink.config_error(
                channel.split("#")[0],
                f"the device has no {reg.table} register {reg.address} "
                f"({reg.count} register{'s' if reg.count > 1 else ''})",
            )

    def _block_problem(self, block: Block, detail: str) -> None:
        if block not in self._bad_blocks:
            self._bad_blocks.add(block)
            log.warning(
                "%s: reading %s registers %d-%d failed: %s",
                self.eq.code,
                block.table,
                block.address,
                block.address + block.count - 1,
                detail,
            )

    def _observations(self, words: dict[Block, list[int]]) -> list[Observation]:
        now = utcnow()
        out: list[Observation] = []
        for channel, reg in self.channels:
            for block, regs in words.items():
                if block.covers(reg):
                    offset = reg.address - block.address
                    value: Any = decode(reg, regs[offset : offset + reg.count])
                    out.append(Observation(channel, value, now))
                    break
        return out


def _why(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
