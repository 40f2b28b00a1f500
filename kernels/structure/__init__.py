"""Microstructures: the procedural manufacturing simulator and structural statistics."""
