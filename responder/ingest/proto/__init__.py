"""Falco's gRPC API (falco.outputs, falco.schema, falco.version) and its generated Python code.

The ``*_pb2*.py``/``.pyi`` files are generated from the ``.proto`` files here by
``python -m responder.ingest.proto.generate``; a test fails when they are stale.
"""
