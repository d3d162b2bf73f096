"""Quality: inspections, deviations with disposition, electronic signatures, the batch record."""
