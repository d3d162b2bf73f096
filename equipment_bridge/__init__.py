"""The equipment bridge: runs next to the machines (OPC UA, Modbus TCP) and pushes their events
to the MES through its GraphQL API. It imports nothing from `backend`."""
