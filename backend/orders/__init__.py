"""Production orders from the ERP: components, operations and the order state machine."""
