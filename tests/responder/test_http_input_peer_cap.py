"""inputs.http.max_connections_per_peer follows max_connections when not set (an eighth, at least
one), so one address cannot take every slot whatever the cap; set, it is kept (a mesh's sidecar, where
every sender shares one address, needs it at max_connections)."""

from __future__ import annotations

import pytest

from responder.config import PEER_SHARE, HttpInput, load_config_text
from responder.errors import UserError
from responder.ingest import httpserver
from responder.ingest.http import Authenticator, build_input_server
from tests.responder.test_logs_json import NeverReached

OPEN_HTTP = "inputs:\n  http:\n    allow_unauthenticated: true\n"


@pytest.mark.parametrize(
    ("cap", "per_peer"),
    [(None, 512), (4096, 512), (1024, 128), (100_000, 12_500), (16, 2)],
)
def test_an_unset_per_peer_cap_is_an_eighth_of_the_cap(cap: int | None, per_peer: int) -> None:
    text = OPEN_HTTP + (f"    max_connections: {cap}\n" if cap is not None else "")
    http = load_config_text(text).inputs.http
    assert http.max_connections_per_peer == per_peer == max(1, http.max_connections // PEER_SHARE)


def test_null_is_unset_and_a_value_is_kept() -> None:
    nulled = load_config_text(OPEN_HTTP + "    max_connections: 1024\n    max_connections_per_peer: null\n")
    assert nulled.inputs.http.max_connections_per_peer == 128
    behind_a_mesh = load_config_text(
        OPEN_HTTP + "    max_connections: 1024\n    max_connections_per_peer: 1024\n"
    )
    assert behind_a_mesh.inputs.http.max_connections_per_peer == 1024
    assert HttpInput(allow_unauthenticated=True, max_connections=2048).max_connections_per_peer == 256


def test_the_servers_default_is_the_configs() -> None:
    assert httpserver.Limits().max_connections_per_peer == HttpInput(enabled=False).max_connections_per_peer
    assert httpserver.MAX_CONNECTIONS_PER_PEER == httpserver.MAX_CONNECTIONS // PEER_SHARE


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("    max_connections_per_peer: 0\n", "inputs.http.max_connections_per_peer: must be at least 1"),
        ("    max_connections: '1024'\n", "inputs.http.max_connections: must be a whole number"),
        ("    max_connections: true\n", "inputs.http.max_connections: must be a whole number"),
    ],
)
def test_bad_values_are_refused_by_their_own_names(line: str, error: str) -> None:
    with pytest.raises(UserError, match=error):
        load_config_text(OPEN_HTTP + line, "c.yaml")


async def test_the_input_server_gets_the_derived_cap() -> None:
    config = HttpInput(enabled=True, allow_unauthenticated=True, max_connections=1024)
    server = build_input_server(config, NeverReached(), Authenticator(config, None))
    assert server.limits.max_connections == 1024
    assert server.limits.max_connections_per_peer == 128
