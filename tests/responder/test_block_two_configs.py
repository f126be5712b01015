"""A destination block made under the block label two configs share (neither set
block_destination.label) is recorded as the block of the config that made it
(serving-guard.io/blocked-by, by quarantine.label): a release by another config leaves it, and the
config that made it may lift it while another config's quarantine stands (review-session-45d M2:
the other config's release lifted it, and the blocking responder read its block gone as a lapse
and blocked again on the next alert). Against the emulated API server, with the real CLI and a real
responder."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.actions import destination
from responder.actions.pod_records import with_blocker
from responder.cli import main
from responder.cluster.api import KubeGateway
from simulators.seed import SeededPod
from tests.helpers import FakeClock
from tests.responder.test_block_destination import BLOCK_LABEL, Seeded, egress_alert, started_blocking
from tests.responder.test_pipeline import submit_all
from tests.responder.test_quarantine import NP, Harness
from tests.responder.test_quarantine_command import (
    ACME,
    LABEL,
    QUARANTINED_AT,
    acme_config,
    stored,
    write_config,
)

BLOCKED_BY = "serving-guard.io/blocked-by"
RELEASED_LABELS = "serving-guard.io/released-labels"


def _blocked_addresses(seeded: Seeded, pod: SeededPod) -> set[str]:
    running, _, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    name = destination.block_policy_name("serving-guard-block", harness.pod(pod).uid)
    policy = harness.stored(NP, pod.namespace, name)
    return {str(a) for a in destination.blocked_by((policy or {}).get("spec"))}


def _cli(
    capsys: pytest.CaptureFixture[str], command: str, pod: SeededPod, config: Path, *extra: str
) -> tuple[int, str]:
    argv = [command, "-n", pod.namespace, pod.name, "--reason", "r", "--by", "carol", *extra]
    code = main([*argv, "--config", str(config)])
    return code, capsys.readouterr().out


def _acme_cutting_ingress(tmp_path: Path, kubeconfig: str) -> Path:
    """acme's config, its quarantine cutting ingress alone: a block of the default's still holds
    the pod (an egress cut would keep the address out itself, and no block is made)."""
    path = acme_config(tmp_path, kubeconfig)
    data = yaml.safe_load(path.read_text())
    data["quarantine"]["isolate"] = "ingress"
    path.write_text(yaml.safe_dump(data))
    return path


def _meta(seeded: Seeded, pod: SeededPod) -> dict[str, Any]:
    found: dict[str, Any] = stored(seeded[0], pod)["metadata"]
    return found


def test_a_block_records_the_config_that_made_it_and_a_second_configs_block_adds_it(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), acme_config(tmp_path, seeded[2])
    assert _cli(capsys, "block", pod, default, "--address", "203.0.113.7")[0] == 0
    assert _meta(seeded, pod)["annotations"][BLOCKED_BY] == LABEL
    assert _cli(capsys, "block", pod, acme, "--address", "198.51.100.9")[0] == 0
    assert _meta(seeded, pod)["annotations"][BLOCKED_BY] == f"{ACME},{LABEL}"
    assert _blocked_addresses(seeded, pod) == {"203.0.113.7", "198.51.100.9"}


def test_a_release_by_another_config_leaves_the_block_and_names_the_config_that_made_it(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default config blocks the pod, acme quarantines it; acme's release takes acme's label off
    and leaves the default's block (before: lifted, read as a lapse by the default's responder)."""
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), acme_config(tmp_path, seeded[2])
    assert _cli(capsys, "block", pod, default, "--address", "203.0.113.7")[0] == 0
    assert _cli(capsys, "quarantine", pod, acme)[0] == 0

    code, out = _cli(capsys, "release", pod, acme)
    assert code == 0, out
    assert "lifted its destination block" not in out
    assert (
        f"its destination block (label {BLOCK_LABEL}) stays: the config with quarantine.label {LABEL} made it"
        f" ({BLOCKED_BY}): release it with that config"
    ) in out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL in meta["labels"] and ACME not in meta["labels"]
    assert meta["annotations"][BLOCKED_BY] == LABEL
    assert _blocked_addresses(seeded, pod) == {"203.0.113.7"}

    # The default's release then lifts it.
    code, out = _cli(capsys, "release", pod, default)
    assert code == 0 and "lifted its destination block" in out, out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL not in meta["labels"] and BLOCKED_BY not in meta["annotations"]
    assert _blocked_addresses(seeded, pod) == set()


def test_the_config_that_made_the_block_lifts_it_while_another_configs_quarantine_stands(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, refused: the block could not be told from acme's (review-session-45c M3)."""
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), _acme_cutting_ingress(tmp_path, seeded[2])
    assert _cli(capsys, "quarantine", pod, acme)[0] == 0
    assert _cli(capsys, "block", pod, default, "--address", "203.0.113.7")[0] == 0

    code, out = _cli(capsys, "release", pod, default)
    assert code == 0, out
    assert "lifted its destination block" in out
    assert f"still quarantined under {ACME}=true-ingress (another config's quarantine.label)" in out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL not in meta["labels"] and meta["labels"][ACME] == "true-ingress"
    assert QUARANTINED_AT in meta["annotations"] and meta["annotations"][RELEASED_LABELS] == LABEL
    assert _blocked_addresses(seeded, pod) == set()

    # A rerun: nothing to release, said so.
    code, out = _cli(capsys, "release", pod, default)
    assert code == 0 and "nothing to release: its release from" in out, out


def test_a_block_both_configs_made_stays_until_the_last_of_them_releases(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), acme_config(tmp_path, seeded[2])
    assert _cli(capsys, "block", pod, default, "--address", "203.0.113.7")[0] == 0
    assert _cli(capsys, "block", pod, acme, "--address", "198.51.100.9")[0] == 0

    code, out = _cli(capsys, "release", pod, default)
    assert code == 0, out
    assert f"the config with quarantine.label {ACME} blocked it too" in out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL in meta["labels"] and meta["annotations"][BLOCKED_BY] == ACME
    assert meta["annotations"][RELEASED_LABELS] == LABEL
    assert _blocked_addresses(seeded, pod) == {"203.0.113.7", "198.51.100.9"}

    code, out = _cli(capsys, "release", pod, default)
    assert code == 0, out
    assert "nothing to release: its release from" in out and f"quarantine.label {ACME} made it" in out

    code, out = _cli(capsys, "release", pod, acme)
    assert code == 0 and "lifted its destination block" in out, out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL not in meta["labels"] and BLOCKED_BY not in meta["annotations"]
    assert _blocked_addresses(seeded, pod) == set()


def test_a_release_of_a_pod_in_another_configs_block_alone_is_refused(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), acme_config(tmp_path, seeded[2])
    assert _cli(capsys, "block", pod, acme, "--address", "198.51.100.9")[0] == 0

    code, out = _cli(capsys, "release", pod, default)
    assert code == 1
    assert f"the pod is not quarantined under {LABEL}, and its destination block" in out
    assert f"the config with quarantine.label {ACME} made it" in out and "nothing was changed" in out
    assert _meta(seeded, pod)["annotations"][BLOCKED_BY] == ACME
    assert _blocked_addresses(seeded, pod) == {"198.51.100.9"}


def test_a_block_record_left_by_a_label_taken_off_by_hand_is_not_carried_over() -> None:
    """The block label gone (kubectl label ... -), a new block is this config's alone; a block no
    record attributes (an earlier version's) is left unattributed: naming this config alone would let
    its release lift another config's block."""
    stale = {"labels": {}, "annotations": {BLOCKED_BY: ACME}}
    assert with_blocker(stale, BLOCK_LABEL, LABEL) == LABEL
    standing = {"labels": {BLOCK_LABEL: "k"}, "annotations": {BLOCKED_BY: ACME}}
    assert with_blocker(standing, BLOCK_LABEL, LABEL) == f"{ACME},{LABEL}"
    assert with_blocker({"labels": {BLOCK_LABEL: "k"}, "annotations": {}}, BLOCK_LABEL, LABEL) is None


async def test_the_blocking_responder_does_not_read_another_configs_release_as_a_lapse(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The responder (default label) blocks vllm's destination on an alert; acme quarantines vllm
    and releases it. The block stands, and the attack's repeats fold into the one incident (before:
    acme's release lifted the block, the responder read it gone and blocked again in a new one)."""
    _, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await started_blocking(tmp_path, kubeconfig, clock)
    try:
        pipeline = responder.pipeline
        assert pipeline is not None

        async def send() -> None:
            await submit_all(responder, [egress_alert(vllm, "203.0.113.7")])

        await send()
        assert BLOCK_LABEL in _meta(seeded, vllm)["labels"]
        acme = str(acme_config(tmp_path, kubeconfig, journal="acme.db"))
        where = ["-n", vllm.namespace, vllm.name, "--reason", "r", "--by", "carol", "--config", acme]
        assert await asyncio.to_thread(main, ["quarantine", *where]) == 0
        assert await asyncio.to_thread(main, ["release", *where]) == 0
        clock.advance(16)
        await send()  # folds, and rechecks the block
        for _ in range(50):
            state = next(iter(pipeline.incidents._open.values()))
            if state.reopen_after_ns is not None:
                break
            await asyncio.sleep(0.02)
        await send()

        assert BLOCK_LABEL in _meta(seeded, vllm)["labels"]
        assert _blocked_addresses(seeded, vllm) == {"203.0.113.7"}
        with closing(sqlite3.connect(responder.config.journal.path)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM incidents").fetchone()[0] == 1
    finally:
        await responder.stop()


def _once_after_the_next_pod_read(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """``action`` runs once, right after the next pod read: another config's command between the
    release's read and its write."""
    original = KubeGateway.get_pod
    armed = [True]

    def get_pod(self: KubeGateway, namespace: str, name: str) -> dict[str, Any]:
        found = original(self, namespace, name)
        if armed:
            armed.clear()
            action()
        return found

    monkeypatch.setattr(KubeGateway, "get_pod", get_pod)


def test_a_block_made_between_a_releases_read_and_its_write_stands(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release writes on the pod as it read it (compare-and-set): acme's block made meanwhile
    is read again, and stays (review-session-47 H1: the release lifted it from its stale read, and
    emptied the policy acme's address was in)."""
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), acme_config(tmp_path, seeded[2])
    assert _cli(capsys, "block", pod, default, "--address", "203.0.113.7")[0] == 0
    acme_blocks = ["block", "-n", pod.namespace, pod.name, "--address", "198.51.100.9", "--reason", "r"]
    _once_after_the_next_pod_read(
        monkeypatch, lambda: main([*acme_blocks, "--by", "erin", "--config", str(acme)])
    )

    code, out = _cli(capsys, "release", pod, default)
    assert code == 0 and f"the config with quarantine.label {ACME} blocked it too" in out, out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL in meta["labels"] and meta["annotations"][BLOCKED_BY] == ACME
    assert _blocked_addresses(seeded, pod) == {"203.0.113.7", "198.51.100.9"}


def test_two_releases_at_once_lift_a_block_both_configs_made(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = seeded[1]["torchserve"]
    default, acme = write_config(tmp_path, seeded[2]), acme_config(tmp_path, seeded[2])
    assert _cli(capsys, "block", pod, default, "--address", "203.0.113.7")[0] == 0
    assert _cli(capsys, "block", pod, acme, "--address", "198.51.100.9")[0] == 0
    acme_releases = ["release", "-n", pod.namespace, pod.name, "--reason", "r", "--by", "erin"]
    _once_after_the_next_pod_read(monkeypatch, lambda: main([*acme_releases, "--config", str(acme)]))

    code, out = _cli(capsys, "release", pod, default)
    assert code == 0 and "lifted its destination block" in out, out
    meta = _meta(seeded, pod)
    assert BLOCK_LABEL not in meta["labels"] and BLOCKED_BY not in meta["annotations"]
    assert meta["annotations"][RELEASED_LABELS] == f"{ACME},{LABEL}"
    assert _blocked_addresses(seeded, pod) == set()
