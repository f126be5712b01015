"""Scenario definitions (YAML, one file per scenario); loaded by :mod:`simulators.scenarios`."""
