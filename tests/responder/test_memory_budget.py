"""The start-up warning when the HTTP input's TLS connections, at their cap, may not fit the
container's memory limit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from responder.commands.serve import warn_if_tls_connections_exceed_memory
from responder.config import load_config_text
from responder.memory_budget import container_memory_limit, tls_memory_warning

MIB = 1024 * 1024
TLS_INPUT = """\
server:
  event_loop: {loop}
inputs:
  http:
    tls: {{cert_file: /etc/tls/tls.crt, key_file: /etc/tls/tls.key, client_ca_file: /etc/tls/ca.crt}}
    max_connections: {cap}
"""


def test_asyncio_at_the_default_cap_does_not_fit_the_charts_limit() -> None:
    warning = tls_memory_warning("asyncio", 4096, 512 * MIB)
    assert warning is not None
    # 4096 x 320 KiB = 1280 MiB; (512 - 128) MiB / 320 KiB = 1228 connections would fit.
    assert "max_connections: 4096 TLS connections may take ~1280 MiB (~320 KiB each" in warning
    assert "memory limit of 512 MiB" in warning
    assert "lower inputs.http.max_connections to 1228 or less" in warning
    assert "server.event_loop: uvloop" in warning


def test_uvloop_at_the_default_cap_fits_the_charts_limit() -> None:
    assert tls_memory_warning("uvloop", 4096, 512 * MIB) is None


def test_uvloop_under_a_small_limit_is_told_the_cap_that_fits() -> None:
    warning = tls_memory_warning("uvloop", 4096, 256 * MIB)
    assert warning is not None
    assert "to 2184 or less" in warning  # 128 MiB / 60 KiB
    assert "event_loop: uvloop" not in warning  # already on it


def test_a_limit_below_the_responders_own_needs_advises_no_negative_cap() -> None:
    warning = tls_memory_warning("uvloop", 16, 64 * MIB)
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


def test_serve_warns_at_start_when_tls_connections_may_not_fit(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config_text(TLS_INPUT.format(loop="asyncio", cap=4096))
    with caplog.at_level(logging.WARNING, logger="serving_guard.serve"):
        warn_if_tls_connections_exceed_memory(config, limit_bytes=512 * MIB)
    (record,) = caplog.records
    assert "may take ~1280 MiB" in record.getMessage()


@pytest.mark.parametrize(
    "text",
    [
        TLS_INPUT.format(loop="uvloop", cap=4096),  # fits
        TLS_INPUT.format(loop="asyncio", cap=1000),  # fits: 128 MiB + ~313 MiB
        "inputs:\n  http:\n    allow_unauthenticated: true\n",  # no TLS: nothing measured to warn of
    ],
)
def test_serve_says_nothing_when_they_fit_or_there_is_no_tls(
    caplog: pytest.LogCaptureFixture, text: str
) -> None:
    config = load_config_text(text)
    with caplog.at_level(logging.WARNING, logger="serving_guard.serve"):
        warn_if_tls_connections_exceed_memory(config, limit_bytes=512 * MIB)
    assert caplog.records == []
