"""Equipment: machine events from the bridge, live state, and OEE from state and count rollups."""
