"""The start-up warning when the HTTP input's connections, at their cap, may not fit the container's
memory limit: each may hold the alert it is handling twice (its body of up to max_body_bytes, and
parsed), what the server buffers beside it, its kernel socket buffers, and a TLS connection its TLS
buffers too."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from responder.commands.serve import warn_if_connections_exceed_memory
from responder.config import load_config_text
from responder.ingest import httpserver
from responder.memory_budget import (
    BUFFERED_BYTES,
    READ_BYTES,
    connection_bytes,
    connections_memory_warning,
    container_memory_limit,
)

MIB = 1024 * 1024
BODY = 320 * 1024  # inputs.http.max_body_bytes by default
TLS_INPUT = """\
server:
  event_loop: {loop}
inputs:
  http:
    tls: {{cert_file: /etc/tls/tls.crt, key_file: /etc/tls/tls.key, client_ca_file: /etc/tls/ca.crt}}
    max_connections: {cap}
"""


def test_a_connection_is_counted_as_the_server_bounds_it() -> None:
    # The request being handled twice (body, parsed alert); beside it the pipelining bound (plus the
    # slice that may pass it), one read, and answers the client has not read.
    assert BUFFERED_BYTES == (
        httpserver.PIPELINE_BYTES + httpserver.FEED_SLICE + READ_BYTES + httpserver.WRITE_BUFFER_HIGH
    )
    # And the kernel's socket buffers, as the server fixes them (doubled by the kernel).
    assert (
        httpserver.KERNEL_BUFFER_BYTES
        == 2 * (httpserver.RECEIVE_BUFFER + httpserver.SEND_BUFFER)
        == 192 * 1024
    )
    assert connection_bytes("uvloop", False, BODY) == 2 * BODY + BUFFERED_BYTES + 192 * 1024 == 1218 * 1024
    assert connection_bytes("uvloop", True, BODY) == 1278 * 1024
    assert connection_bytes("asyncio", True, BODY) == 1538 * 1024
    # Pipelining room beside a large body is far below a second one.
    assert httpserver.PIPELINE_BYTES < BODY // 4


def test_asyncio_at_the_default_cap_does_not_fit_a_512mi_limit() -> None:
    warning = connections_memory_warning("asyncio", True, 4096, BODY, 512 * MIB)
    assert warning is not None
    # 4096 x 1538 KiB = 6152 MiB; (512 - 192) MiB / 1538 KiB = 213 connections would fit.
    assert "max_connections: 4096 TLS connections may take ~6152 MiB (~1538 KiB each" in warning
    assert "an alert of up to 320 KiB as its body and parsed, ~386 KiB of requests and answers" in warning
    assert (
        "~320 KiB of TLS buffers with server.event_loop asyncio and 192 KiB of kernel socket buffers"
        in warning
    )
    assert "memory limit of 512 MiB" in warning
    assert "lower inputs.http.max_connections to 213 or less" in warning
    assert "server.event_loop: uvloop" in warning


def test_uvloop_at_the_charts_cap_fits_the_charts_limit() -> None:
    assert connections_memory_warning("uvloop", True, 1024, BODY, 1536 * MIB) is None
    # Not the 1280Mi the chart set before the kernel's buffers were counted: 1024 x 1278 KiB = 1278 MiB.
    warning = connections_memory_warning("uvloop", True, 1024, BODY, 1280 * MIB)
    assert warning is not None and "may take ~1278 MiB" in warning and "to 871 or less" in warning
    # 4096 of them do not fit 1536Mi either: 4096 x 1278 KiB = 5112 MiB.
    warning = connections_memory_warning("uvloop", True, 4096, BODY, 1536 * MIB)
    assert warning is not None and "may take ~5112 MiB" in warning and "to 1076 or less" in warning


def test_uvloop_under_a_small_limit_is_told_the_cap_that_fits() -> None:
    warning = connections_memory_warning("uvloop", True, 4096, BODY, 256 * MIB)
    assert warning is not None
    assert "to 51 or less" in warning  # (256 - 192) MiB / 1278 KiB
    assert "event_loop: uvloop" not in warning  # already on it


def test_plain_connections_hold_bodies_too() -> None:
    warning = connections_memory_warning("asyncio", False, 4096, BODY, 512 * MIB)
    assert warning is not None
    assert "4096 connections may take ~4872 MiB (~1218 KiB each: an alert of up to 320 KiB" in warning
    assert "to 269 or less" in warning and "uvloop" not in warning  # no TLS buffers to shrink
    assert connections_memory_warning("asyncio", False, 1024, BODY, 1536 * MIB) is None


def test_a_limit_below_the_responders_own_needs_advises_no_negative_cap() -> None:
    warning = connections_memory_warning("uvloop", True, 16, BODY, 64 * MIB)
    assert warning is not None and "to 0 or less" in warning


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "536870912\n"}, 536870912),
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "268435456\n"}, 268435456),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # cgroup v1: no limit
        ({}, None),
    ],
)
def test_the_limit_comes_from_the_cgroup(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert container_memory_limit(tmp_path) == expected


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        (TLS_INPUT.format(loop="asyncio", cap=4096), "4096 TLS connections may take ~6152 MiB"),
        ("inputs:\n  http:\n    allow_unauthenticated: true\n", "4096 connections may take ~4872 MiB"),
    ],
)
def test_serve_warns_at_start_when_connections_may_not_fit(
    caplog: pytest.LogCaptureFixture, text: str, taken: str
) -> None:
    config = load_config_text(text)
    with caplog.at_level(logging.WARNING, logger="serving_guard.serve"):
        warn_if_connections_exceed_memory(config, limit_bytes=512 * MIB)
    (record,) = caplog.records
    assert taken in record.getMessage()


@pytest.mark.parametrize(
    "text",
    [
        TLS_INPUT.format(loop="uvloop", cap=1024),  # fits: 128 MiB + ~1278 MiB
        TLS_INPUT.format(loop="asyncio", cap=850),  # fits: 128 MiB + ~1277 MiB
        "inputs:\n  http:\n    allow_unauthenticated: true\n    max_connections: 1024\n",  # fits: ~1218 MiB
        "inputs:\n  http:\n    enabled: false\n",  # no input
    ],
)
def test_serve_says_nothing_when_they_fit_or_there_is_no_input(
    caplog: pytest.LogCaptureFixture, text: str
) -> None:
    config = load_config_text(text)
    with caplog.at_level(logging.WARNING, logger="serving_guard.serve"):
        warn_if_connections_exceed_memory(config, limit_bytes=1536 * MIB)  # the chart's
    assert caplog.records == []


def test_alerts_in_flight_past_the_default_bytes_count_against_the_limit() -> None:
    # 1024 uvloop TLS connections fit 1536Mi with the default 64 MiB of alerts in flight ...
    assert connections_memory_warning("uvloop", True, 1024, BODY, 1536 * MIB) is None
    # ... not with 512 MiB of them: 192 + 448 MiB for the responder, 1278 MiB for the connections.
    warning = connections_memory_warning("uvloop", True, 1024, BODY, 1536 * MIB, 512 * MIB)
    assert warning is not None
    assert (
        "on top of ~640 MiB for the responder, its alerts in flight (journal.max_pending_bytes) and its open"
        " incidents (dedupe.max_open_bytes)" in warning
    )
    assert "to 717 or less" in warning  # (1536 - 640) MiB / 1278 KiB


def test_open_incidents_past_the_default_bytes_count_against_the_limit() -> None:
    # 192 + 448 MiB for the responder with 512 MiB of open incidents, as with alerts in flight.
    warning = connections_memory_warning(
        "uvloop", True, 1024, BODY, 1536 * MIB, max_open_incident_bytes=512 * MIB
    )
    assert warning is not None and "on top of ~640 MiB" in warning and "to 717 or less" in warning
