"""The V-blender BLENDER-01 as a Modbus TCP server (pymodbus).

127.0.0.1:<port>, device id 1, holding registers (0-based; function code 3, and 4 reads the
same block):

| address | type                     | value                                                |
|---------|--------------------------|------------------------------------------------------|
| 0       | UINT16                   | state code (see `model`)                             |
| 1       | UINT16                   | reason code (0 none, see `model`)                    |
| 2-3     | UINT32, high word first  | good count, cumulative, wraps at rollover            |
| 4-5     | UINT32, high word first  | reject count, same                                   |
| 6       | INT16                    | temperature x 10 (°C)                                |
| 7       | UINT16                   | alarm: 0 none, 101 Motor overload, 102 Guard open    |
| 8       | UINT16                   | alarm active, 0/1                                    |

The block is exactly these 9 registers: a read beyond address 8 gets exception 2
(ILLEGAL_ADDRESS), and writes are refused with exception 1 (ILLEGAL_FUNCTION), as a PLC's
status area would. One tick's values are set in one call, so a read never sees half a tick.
"""

from __future__ import annotations

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from equipment_bridge.simulators.model import Alarm, Snapshot

DEVICE_ID = 1
REGISTER_COUNT = 9
_READ_HOLDING = 3
_WRITE_CODES = frozenset({5, 6, 15, 16, 22, 23})


def registers(snap: Snapshot) -> list[int]:
    """The holding registers 0-8 for a snapshot."""
    temperature = round(snap.temperature * 10)
    return [
        int(snap.state),
        int(snap.reason),
        snap.good >> 16,
        snap.good & 0xFFFF,
        snap.reject >> 16,
        snap.reject & 0xFFFF,
        temperature & 0xFFFF,  # two's complement for INT16
        int(snap.alarm),
        int(snap.alarm is not Alarm.NONE),
    ]


async def _read_only(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    current_registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    # Our own updates come through async_setValues with the read code; clients' writes don't.
    if function_code in _WRITE_CODES:
        return ExcCodes.ILLEGAL_FUNCTION
    return None


class BlenderServer:
    """The Modbus TCP server of one blender: `start()`, `publish()` snapshots, `stop()`."""

    def __init__(self, equipment_code: str) -> None:
        self.equipment_code = equipment_code
        self.endpoint = ""
        self._server: ModbusTcpServer | None = None
        self._shown: list[int] = []

    async def start(self, host: str, port: int, first: Snapshot) -> str:
        """Listens with `first`'s values; returns "host:port" (port 0 binds a free port)."""
        self._shown = registers(first)
        device = SimDevice(
            id=DEVICE_ID,
            simdata=[SimData(address=0, values=self._shown, datatype=DataType.REGISTERS)],
            action=_read_only,
        )
        server = ModbusTcpServer(device, address=(host, port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as error:  # pymodbus reports a failed bind this way
            await server.shutdown()  # type: ignore[no-untyped-call]
            raise OSError(f"cannot listen on {host}:{port}") from error
        self._server = server
        bound = port
        if server.transport is not None:
            sockets = getattr(server.transport, "sockets", None)
            if sockets:
                bound = sockets[0].getsockname()[1]
        self.endpoint = f"{host}:{bound}"
        return self.endpoint

    async def publish(self, snap: Snapshot) -> None:
        """Sets registers 0-8 when any of them changed."""
        values = registers(snap)
        if self._server is None or values == self._shown:
            return
        await self._server.async_setValues(DEVICE_ID, _READ_HOLDING, 0, values)
        self._shown = values

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
