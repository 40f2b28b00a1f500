"""Metrics of a labelled volume: fractions, interface areas, transport solves (solvers/), sub-volume statistics."""
