"""Lots: receiving, scanning, consumption, genealogy and expiry."""
