"""One sender's deferred alerts take at most journal.max_deferred_share of the journal: a sender that
sends unique alerts faster than they are decided (a stolen credential, a runaway node) is refused
past its share, rather than fill the journal (after which every sender is refused, and Falco drops
what is refused) and bury the others' alerts behind its backlog. Against the emulated API server."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from responder.alert import Alert
from responder.cluster.api import KubeGateway
from responder.config import load_config_text
from responder.deferred_shares import DeferredShares, sender_key
from responder.errors import UserError
from responder.ingest.sink import InputName, Overloaded
from responder.journal.ops import ROW_BYTES
from responder.journal.rows import encode_payload
from responder.journal.store import Journal
from responder.sender import Proof, Sender
from responder.service import Responder
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import responder_config
from tests.responder.test_http_input import post, start
from tests.responder.test_pipeline import Seeded, all_done, rows, shell

FLOODER = Sender("10.0.0.66", Proof.TOKEN, token=1)
NODE = Sender("10.0.0.7", Proof.CERTIFICATE, ("falco",))
MIB = 1024 * 1024


def sent_by(sender: Sender, pod: SeededPod, n: int) -> Alert:
    # Distinct rules on one pod: distinct incidents that queue behind the pod's lock.
    return dataclasses.replace(shell(pod, n=n, rule=f"Rule {n}"), sender=sender)


def test_a_share_refuses_past_its_bytes_but_always_takes_a_senders_first_alert() -> None:
    shares = DeferredShares(limit_bytes=1000)
    assert shares.refusal("a", 5000) is None  # nothing deferred yet: one alert alone always fits
    shares.add("a", 600)
    assert shares.refusal("a", 400) is None and shares.refusal("b", 1000) is None
    refused = shares.refusal("a", 401)
    assert refused is not None and refused.startswith("this sender's deferred alerts take 600 bytes")
    shares.remove("a", 600)
    assert shares.taken("a") == 0 and shares.refusal("a", 1000) is None


async def test_one_sender_past_its_share_is_refused_and_the_others_are_still_deferred(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    share = 0.005  # of 1 MiB: ~5 KiB, a handful of alerts
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={"journal": {"max_pending": 10, "max_bytes": MIB, "max_deferred_share": share}},
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    running.emulator.latency_seconds = 0.3  # each pod read is slow: in-flight alerts pile up
    await responder.start()
    try:
        pipeline = responder.pipeline
        assert pipeline is not None
        size = len(encode_payload(sent_by(FLOODER, pods["vllm"], 0))) + ROW_BYTES
        fits = int(MIB * share) // size
        deferred, refused = 0, []
        for n in range(10 + fits + 5):
            try:
                answer = await pipeline.submit(
                    sent_by(FLOODER, pods["vllm"], n), InputName.HTTP, wait_seconds=0.01
                )
            except Overloaded as exc:
                refused.append(exc.reason)
                continue
            deferred += answer.deferred
        # The first ten hold the slots; then the flooder defers its share, and is refused past it.
        assert fits - 1 <= deferred <= fits + 1 and len(refused) >= 3
        assert refused[0].startswith("this sender's deferred alerts take ")
        assert "(journal.max_deferred_share: 5242 bytes)" in refused[0]
        assert pipeline._deferred_shares.taken(sender_key(FLOODER)) > int(MIB * share) - size
        # Another sender still finds its alerts deferred, not refused.
        others = [
            await pipeline.submit(sent_by(NODE, pods["triton"], n), InputName.HTTP, wait_seconds=0.01)
            for n in range(3)
        ]
        assert all(answer.new and answer.deferred for answer in others)
        assert responder.metrics.overloaded.labels("http")._value.get() == len(refused)
        running.emulator.latency_seconds = 0
        await all_done(responder)
        journaled = rows(config, "SELECT COUNT(*) FROM alerts")[0][0]
        assert journaled == 10 + deferred + len(others)
        # Taken up, the backlog no longer counts against anyone.
        assert pipeline._deferred_shares.taken(sender_key(FLOODER)) == 0
        assert pipeline._deferred_shares.taken(sender_key(NODE)) == 0
    finally:
        await responder.stop()


def test_the_journal_tells_a_backlog_left_by_the_last_run_by_sender(tmp_path: Path, seeded: Seeded) -> None:
    """At start the pipeline counts what the journal holds deferred against its senders (recover)."""
    pods = seeded[1]
    journal = Journal(str(tmp_path / "j.db"), max_bytes=64 * MIB, retention_seconds=3600.0, writer="thread")
    journal.open()
    try:
        alerts = [
            sent_by(FLOODER, pods["vllm"], 0),
            sent_by(FLOODER, pods["vllm"], 1),
            sent_by(NODE, pods["triton"], 2),
        ]
        for alert in [*alerts, shell(pods["kserve"], n=3, rule="Rule 3")]:
            journal.run_sync(Journal.op_append_deferred(alert, "http", 1))
        by_sender = journal.deferred_bytes_by_sender()
        # Each row as the journal's size accounting counts it: its body and ROW_BYTES.
        assert by_sender == {
            sender_key(FLOODER): sum(len(encode_payload(a)) + ROW_BYTES for a in alerts[:2]),
            sender_key(NODE): len(encode_payload(alerts[2])) + ROW_BYTES,
            "": len(encode_payload(shell(pods["kserve"], n=3, rule="Rule 3"))) + ROW_BYTES,
        }
        assert [sender for _, _, sender in journal.deferred_rows(0, 10)] == [
            sender_key(FLOODER),
            sender_key(FLOODER),
            sender_key(NODE),
            "",
        ]
    finally:
        journal.close()


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_the_share_is_a_fraction_of_the_journal(share: float) -> None:
    with pytest.raises(UserError, match=r"journal\.max_deferred_share"):
        load_config_text(f"journal:\n  max_deferred_share: {share}\n")


async def test_over_http_a_sender_past_its_share_gets_503_and_the_log_names_it(
    tmp_path: Path, seeded: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    running, pods, kubeconfig = seeded
    running.emulator.latency_seconds = 0.5  # pod reads are slow, so opened incidents pile up
    responder = await start(
        tmp_path,
        kubeconfig,
        {"allow_unauthenticated": True, "admission_timeout_seconds": 0},
        journal={"max_pending": 10, "max_bytes": MIB, "max_deferred_share": 0.003},
    )
    try:
        answers = []
        with caplog.at_level(logging.WARNING, logger="serving_guard"):
            for n in range(20):
                alert = falco_alert(pods["vllm"], f"Rule {n}", "Notice", "x", {"proc.name": "sh"})
                answers.append(await post(responder.http_url or "", falco_bytes(alert)))
        statuses = [status for status, _, _ in answers]
        assert statuses[:10] == [202] * 10 and 202 in statuses[10:] and 503 in statuses[10:]
        refused = next(payload for status, payload, _ in answers if status == 503)
        assert refused["reason"].startswith("this sender's deferred alerts take ")
        said = [r.getMessage() for r in caplog.records if "deferred alerts take" in r.getMessage()]
        assert said and "(sender: unauthenticated from 127.0.0.1)" in said[0]
        counted = 'serving_guard_alerts_rejected_total{input="http",reason="deferred_share"}'
        assert f"{counted} {statuses.count(503)}.0" in responder.metrics.render().decode()
    finally:
        running.emulator.latency_seconds = 0
        await responder.stop()
