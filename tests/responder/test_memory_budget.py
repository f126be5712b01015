"""The start-up warning when the HTTP input's connections, at their cap, may not fit the container's
memory limit: each may hold a body of up to max_body_bytes, and a TLS connection its buffers too."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from responder.commands.serve import warn_if_connections_exceed_memory
from responder.config import load_config_text
from responder.memory_budget import connections_memory_warning, container_memory_limit

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


def test_asyncio_at_the_default_cap_does_not_fit_the_charts_limit() -> None:
    warning = connections_memory_warning("asyncio", True, 4096, BODY, 512 * MIB)
    assert warning is not None
    # 4096 x (320 + 320) KiB = 2560 MiB; (512 - 128) MiB / 640 KiB = 614 connections would fit.
    assert "max_connections: 4096 TLS connections may take ~2560 MiB (~640 KiB each" in warning
    assert "a body of up to 320 KiB and ~320 KiB of TLS buffers with server.event_loop asyncio" in warning
    assert "memory limit of 512 MiB" in warning
    assert "lower inputs.http.max_connections to 614 or less" in warning
    assert "server.event_loop: uvloop" in warning


def test_uvloop_at_the_charts_cap_fits_the_charts_limit() -> None:
    assert connections_memory_warning("uvloop", True, 1024, BODY, 512 * MIB) is None
    # 4096 of them do not: 4096 x 380 KiB = 1520 MiB.
    warning = connections_memory_warning("uvloop", True, 4096, BODY, 512 * MIB)
    assert warning is not None and "may take ~1520 MiB" in warning and "to 1034 or less" in warning


def test_uvloop_under_a_small_limit_is_told_the_cap_that_fits() -> None:
    warning = connections_memory_warning("uvloop", True, 4096, BODY, 256 * MIB)
    assert warning is not None
    assert "to 344 or less" in warning  # 128 MiB / 380 KiB
    assert "event_loop: uvloop" not in warning  # already on it


def test_plain_connections_hold_bodies_too() -> None:
    warning = connections_memory_warning("asyncio", False, 4096, BODY, 512 * MIB)
    assert warning is not None
    assert "4096 connections may take ~1280 MiB (~320 KiB each: a body of up to 320 KiB)" in warning
    assert "to 1228 or less" in warning and "uvloop" not in warning  # no TLS buffers to shrink
    assert connections_memory_warning("asyncio", False, 1024, BODY, 512 * MIB) is None


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
        (TLS_INPUT.format(loop="asyncio", cap=4096), "4096 TLS connections may take ~2560 MiB"),
        ("inputs:\n  http:\n    allow_unauthenticated: true\n", "4096 connections may take ~1280 MiB"),
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
        TLS_INPUT.format(loop="uvloop", cap=1024),  # fits: 128 MiB + ~380 MiB
        TLS_INPUT.format(loop="asyncio", cap=600),  # fits: 128 MiB + ~375 MiB
        "inputs:\n  http:\n    allow_unauthenticated: true\n    max_connections: 1024\n",  # fits
        "inputs:\n  http:\n    enabled: false\n",  # no input
    ],
)
def test_serve_says_nothing_when_they_fit_or_there_is_no_input(
    caplog: pytest.LogCaptureFixture, text: str
) -> None:
    config = load_config_text(text)
    with caplog.at_level(logging.WARNING, logger="serving_guard.serve"):
        warn_if_connections_exceed_memory(config, limit_bytes=512 * MIB)
    assert caplog.records == []
