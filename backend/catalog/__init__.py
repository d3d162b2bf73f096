"""Master data: materials, characteristics, work centers and equipment."""
