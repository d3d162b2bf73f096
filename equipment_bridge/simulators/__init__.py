"""Machine simulators for the demo plant and the bridge's fault tests.

- `opcua_press`: an OPC UA server playing the tablet press PRESS-01
  (`opc.tcp://127.0.0.1:4840/mes/sim`, namespace `urn:mes:simulator`).
- `modbus_blender`: a Modbus TCP server playing the V-blender BLENDER-01
  (127.0.0.1:5020, device id 1, holding registers 0-8).
- `model`: the seeded machine behaviour both servers publish (states with random jams, planned
  breaks, changeovers; good and reject counters that roll over; temperature; alarms).
- `run`: `run_simulators(...)` runs both in one process; `python -m equipment_bridge.simulators.run`
  and `mes simulate` are its command lines.

Node ids, the register map and the state, reason and alarm codes are listed in the docstrings
of `model`, `opcua_press` and `modbus_blender`.
"""
