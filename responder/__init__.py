"""Serving Guard responder: Falco alerts in, verified quarantine out."""

__version__ = "0.1.0"
