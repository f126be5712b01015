"""A cloud metadata address alerts on egress whatever the allowed networks and ports hold
(serving_guard_metadata_addresses, an always-alert term ahead of the allow-lists): a tuning that allows
every IPv4 address on port 80 still leaves the metadata examples firing, while the other egress examples
it allows fail (which shows the tuning took effect)."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.sysdig import Sysdig

pytestmark = pytest.mark.timeout(300)

ALLOW_EVERYTHING = """\
- list: serving_guard_allowed_egress_networks
  items: [0.0.0.0/0]
  override:
    items: append

- list: serving_guard_allowed_egress_ports
  items: [80, 443]
  override:
    items: append
"""


def _failed_examples(out: str) -> set[str]:
    return {
        line.strip().split(":", 1)[0].removeprefix("example ")
        for line in out.splitlines()
        if line.startswith("  example ")
    }


def test_metadata_addresses_alert_inside_allowed_networks_and_ports(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "allow-everything.yaml"
    tuning.write_text(ALLOW_EVERYTHING, encoding="utf-8")
    code = main(["rules", "test", "--override", str(tuning)])
    out = capsys.readouterr().out
    assert code == 1, out[-2000:]
    failed = _failed_examples(out)
    assert "tcp-to-outside" in failed  # the tuning allows the recorded public destination
    assert "alibaba-cloud-metadata" not in failed  # 100.100.100.200:80
    assert "cloud-metadata" not in failed  # 169.254.169.254:80
