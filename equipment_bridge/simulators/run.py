"""Runs the press (OPC UA) and blender (Modbus TCP) simulators in one process.

    python -m equipment_bridge.simulators.run [--opcua-port 4840] [--modbus-port 5020]
        [--seed 42] [--rollover 4294967296] [--speed 1]

Prints one line per server once it listens, then runs until SIGINT/SIGTERM (exit 0).
Both machines advance in fixed simulated ticks (`model.TICK_SECONDS`, each lasting
TICK_SECONDS / speed of wall time): the seed fixes what happens at every tick, the wall clock
only decides when ticks are published. At most one state change is published per wake-up (every
max(tick, 50 ms)), so every state stays visible for at least one wake-up even at high speed;
a slow host, or a speed at which states change more than 20 times a wall-clock second (above
about 300), makes the simulation lag behind the wall clock rather than skip states.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from equipment_bridge.simulators.model import (
    BLENDER,
    MAX_ROLLOVER,
    PRESS,
    TICK_SECONDS,
    Machine,
    Snapshot,
)

HOST = "127.0.0.1"
DEFAULT_OPCUA_PORT = 4840
DEFAULT_MODBUS_PORT = 5020
DEFAULT_SEED = 42
_MIN_WAKEUP_SECONDS = 0.05
_MAX_TICKS_PER_WAKEUP = 10_000  # bounds the catch-up after the process was stopped (SIGSTOP)
_STOP_TIMEOUT_SECONDS = 5.0

Publish = Callable[[Snapshot], Awaitable[None]]


class SimulatorError(Exception):
    """An expected failure (bad argument, port in use): its message is one line for the user."""


async def drive(machine: Machine, publish: Publish, speed: float) -> None:
    """Advances `machine` with the wall clock (scaled by `speed`) and publishes it, forever."""
    loop = asyncio.get_running_loop()
    tick_wall = TICK_SECONDS / speed
    wakeup = max(tick_wall, _MIN_WAKEUP_SECONDS)
    started = loop.time()
    while True:
        due = int((loop.time() - started) / tick_wall)
        for _ in range(min(due - machine.tick, _MAX_TICKS_PER_WAKEUP)):
            if machine.step():
                break  # publish this change before simulating past it
        await publish(machine.snapshot())
        await asyncio.sleep(wakeup - (loop.time() - started) % wakeup)


def _check(opcua_port: int, modbus_port: int, rollover: int, speed: float) -> None:
    for name, port in (("--opcua-port", opcua_port), ("--modbus-port", modbus_port)):
        if not 0 <= port <= 65535:
            raise SimulatorError(f"{name} must be between 0 and 65535, not {port}")
    if opcua_port == modbus_port != 0:
        raise SimulatorError(f"--opcua-port and --modbus-port are both {opcua_port}")
    if not 2 <= rollover <= MAX_ROLLOVER:
        raise SimulatorError(f"--rollover must be between 2 and {MAX_ROLLOVER}, not {rollover}")
    if not 0 < speed <= 10_000:
        raise SimulatorError(f"--speed must be above 0 and at most 10000, not {speed}")


def _why(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "address already in use"
    if error.errno is None:  # pymodbus does not say why a bind failed
        return "address in use or not available"
    return error.strerror or str(error)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run_simulators(
    opcua_port: int = DEFAULT_OPCUA_PORT,
    modbus_port: int = DEFAULT_MODBUS_PORT,
    seed: int = DEFAULT_SEED,
    rollover: int = MAX_ROLLOVER,
    speed: float = 1.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serves PRESS-01 over OPC UA and BLENDER-01 over Modbus TCP on 127.0.0.1 until stopped.

    With `stop=None` it runs until SIGINT or SIGTERM (handlers installed for the duration);
    with an event, until the event is set (the caller owns the signals). Port 0 binds a free
    port; the printed lines name the real endpoints. Raises SimulatorError for a bad argument
    or a port that cannot be bound.
    """
    _check(opcua_port, modbus_port, rollover, speed)
    # Imported here so that `mes --help` does not load asyncua and pymodbus.
    from equipment_bridge.simulators.modbus_blender import BlenderServer
    from equipment_bridge.simulators.opcua_press import PressServer, quiet_library_logs

    quiet_library_logs()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
                handled.append(signum)

    press = Machine(PRESS, seed=seed, rollover=rollover)
    blender = Machine(BLENDER, seed=seed, rollover=rollover)
    press_server = PressServer(PRESS.code)
    blender_server = BlenderServer(BLENDER.code)
    started: list[PressServer | BlenderServer] = []
    tasks: list[asyncio.Task[Any]] = []
    stopped: asyncio.Task[Any] | None = None
    lines = ["", ""]

    async def start_press() -> None:
        try:
            endpoint = await press_server.start(HOST, opcua_port, press.snapshot())
        except OSError as error:
            raise SimulatorError(
                f"cannot serve OPC UA on {HOST}:{opcua_port}: {_why(error)}"
            ) from None
        started.append(press_server)
        lines[0] = f"simulator {PRESS.code} (OPC UA): {endpoint}"

    async def start_blender() -> None:
        try:
            endpoint = await blender_server.start(HOST, modbus_port, blender.snapshot())
        except OSError as error:
            raise SimulatorError(
                f"cannot serve Modbus TCP on {HOST}:{modbus_port}: {_why(error)}"
            ) from None
        started.append(blender_server)
        lines[1] = f"simulator {BLENDER.code} (Modbus TCP): {endpoint} device 1"

    try:
        # OPC UA fills its address space in a thread: start Modbus meanwhile.
        results = await asyncio.gather(start_press(), start_blender(), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for line in lines:
            _say(line)
        # Both clocks start together, after both servers listen.
        tasks = [
            asyncio.create_task(drive(press, press_server.publish, speed), name=PRESS.code),
            asyncio.create_task(drive(blender, blender_server.publish, speed), name=BLENDER.code),
        ]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopped:
                task.result()  # a publisher that failed: let its error out
    finally:
        if stopped is not None:
            tasks.append(stopped)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in reversed(started):
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(server.stop(), _STOP_TIMEOUT_SECONDS)
        for signum in handled:
            loop.remove_signal_handler(signum)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator options (shared by `mes simulate` and this module's command line)."""
    parser.add_argument(
        "--opcua-port", type=int, default=DEFAULT_OPCUA_PORT, metavar="PORT",
        help=f"OPC UA press on 127.0.0.1:PORT (default {DEFAULT_OPCUA_PORT}; 0 picks a free one)",
    )  # fmt: skip
    parser.add_argument(
        "--modbus-port", type=int, default=DEFAULT_MODBUS_PORT, metavar="PORT",
        help=f"Modbus TCP blender on 127.0.0.1:PORT (default {DEFAULT_MODBUS_PORT})",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, metavar="N",
        help=f"the same seed plays the same states and counts (default {DEFAULT_SEED})",
    )  # fmt: skip
    parser.add_argument(
        "--rollover", type=int, default=MAX_ROLLOVER, metavar="N",
        help="counters wrap to 0 at N (default 2**32)",
    )  # fmt: skip
    parser.add_argument(
        "--speed", type=float, default=1.0, metavar="X",
        help="simulated seconds per wall-clock second (default 1)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m equipment_bridge.simulators.run`: exits 0 after SIGINT/SIGTERM, 1 on an error."""
    parser = argparse.ArgumentParser(
        prog="python -m equipment_bridge.simulators.run",
        description="OPC UA tablet press and Modbus TCP blender simulators",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            run_simulators(args.opcua_port, args.modbus_port, args.seed, args.rollover, args.speed)
        )
    except SimulatorError as error:
        sys.stderr.write(f"simulate: {error}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # a Ctrl+C before the handlers were installed
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
