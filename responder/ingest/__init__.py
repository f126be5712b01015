"""Inputs: bytes from Falco (HTTP, gRPC, JSON lines) to typed Alerts handed to an AlertSink."""
