"""The cell model: design mapping and physical ranges, the PyBaMM DFN, 4680 geometry, calibration."""
