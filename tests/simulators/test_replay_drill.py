"""Drills (review-replay H1, M2): a replay is a drill unless --live. Over HTTP only the drill token
makes one (the request's drill header refuses any other credential); a drill is journaled as one,
decided in dry-run unless guardrails.enforce_drills, kept in incidents of its own (Falco's alert of
the same rule on the same pod is never folded into it), and said as a DRILL in Slack and by verify."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from responder.client import ClientAuth, ResponderClient
from responder.service import Responder
from simulators.scenario import load_reference_policy
from simulators.slack_sink import SlackSink
from tests.simulators.conftest import ChainFactory, Seeded, trail_token
from tests.simulators.test_replay_verify import cli, pod_ref, replay, run_verify

QUARANTINE_LABEL = "serving-guard.io/quarantine"


def _drill_token(tmp_path: Path) -> Path:
    path = tmp_path / "drill-token"
    path.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
    return path


def _http(drill_token: Path) -> dict[str, Any]:
    # No sender token: an alert without a bearer token is Falco's (allow_unauthenticated).
    return {"listen": "127.0.0.1:0", "allow_unauthenticated": True, "drill_token": {"file": str(drill_token)}}


async def _decided(responder: Responder, run_id: str, count: int) -> list[dict[str, Any]]:
    """This run's audit entries once ``count`` of them have an incident with a decision and every action
    of it is done."""
    url = responder.http_url
    assert url is not None
    deadline = time.monotonic() + 20
    async with ResponderClient(url, ClientAuth(token=trail_token(responder))) as client:
        while True:
            entries: list[dict[str, Any]] = [dict(e) for e in await client.audit(run_id=run_id)]
            decided = [e for e in entries if (e.get("incident") or {}).get("decision")]
            settled = all(
                a.get("status") not in (None, "pending")
                for e in decided
                for a in e["incident"].get("actions") or []
            )
            if len(decided) >= count and settled:
                return entries
            assert time.monotonic() < deadline, entries
            await asyncio.sleep(0.05)


def _pod_labels(seeded: Seeded, key: str) -> dict[str, str]:
    pod = seeded.pods[key]
    found = seeded.cluster.call(seeded.cluster.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    return dict(found["metadata"].get("labels") or {})


async def test_a_drill_is_decided_in_dry_run_and_never_folds_falcos_alert(
    chain: ChainFactory,
    seeded: Seeded,
    sink: SlackSink,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    drill_token = _drill_token(tmp_path)
    async with chain(inputs={"http": _http(drill_token)}) as responder:
        url = responder.http_url
        out = await replay(
            seeded,
            capsys,
            url,
            run_id,
            "shell-in-serving-pod",
            live=False,
            extra=("--token-file", str(drill_token)),
        )
        assert " as a drill\n" in out, out
        assert "the responder took them as a drill" in out, out
        # The verify it prints expects what a drill does: predicts the quarantine (review-drills L2).
        printed = next(line for line in out.splitlines() if line.startswith("check the responder: "))
        assert printed.endswith(" --expect shell-in-serving-pod=dry_run"), printed
        assert "then leave the --expect ...=dry_run out" in out
        entries = await _decided(responder, run_id, 2)
        for entry in entries:
            assert entry["sender"]["proof"] == "drill-token" and entry["sender"]["drill"] is True, entry
            decision = entry["incident"]["decision"]
            assert decision["dry_run"] and decision["dry_run_by"] == "drill", decision
        assert QUARANTINE_LABEL not in _pod_labels(seeded, "torchserve")
        drill_incident = entries[0]["incident"]["incident_id"]
        # Slack says it is a drill, first, and who sent it.
        posts = [m for m in sink.all_messages() if m.thread_ts is None]
        assert len(posts) == 1, posts
        assert posts[0].text.startswith("DRILL: "), posts[0].text
        assert posts[0].blocks[0]["text"]["text"].startswith("DRILL: ")
        headline = posts[0].blocks[1]["text"]["text"]
        assert (
            ":test_tube: *Drill*: a replay sent with the drill token (`drill token 1 from 127.0.0.1`)"
            in headline
        )
        assert (
            "Decided in dry-run (guardrails.enforce_drills is off): nothing was done to the pod." in headline
        )
        # verify says so, and that a drill's dry-run is what it got.
        code, verdicts = await run_verify(responder, capsys, run_id, "shell-in-serving-pod")
        assert code == 1, verdicts
        assert "the alerts are a drill (the responder's guardrails.enforce_drills is off)" in verdicts
        assert "expect its dry-run (--expect all=dry_run)" in verdicts
        assert (
            "sent by: drill token 1 from 127.0.0.1 (a DRILL: replayed alerts prove the responder, not"
            " detection)" in verdicts
        )
        code, verdicts = await run_verify(
            responder, capsys, run_id, "shell-in-serving-pod", extra=("--expect", "all=dry_run")
        )
        assert code == 0, verdicts

        # Falco's alert of the same rule on the same pod, within the drill's window: its own
        # incident, acted on (folded into the drill's, it would have been a dry-run repeat).
        live_run = run_id + "f"
        out = await replay(seeded, capsys, url, live_run, "shell-in-serving-pod")
        live = await _decided(responder, live_run, 2)
        assert {e["incident"]["incident_id"] for e in live} != {drill_incident}
        assert all("drill" not in e["sender"] for e in live), live
        assert _pod_labels(seeded, "torchserve").get(QUARANTINE_LABEL) == "true"
        code, verdicts = await run_verify(responder, capsys, live_run, "shell-in-serving-pod")
        assert code == 0, verdicts
        assert "sent by: unauthenticated from 127.0.0.1\n" in verdicts + "\n", verdicts
        # Falco's incident posts on its own, not in the drill's thread.
        falco_posts = [m for m in sink.all_messages() if not m.text.startswith("DRILL")]
        assert any(m.thread_ts is None for m in falco_posts), falco_posts


async def test_a_drill_acts_where_the_responder_enforces_drills(
    chain: ChainFactory,
    seeded: Seeded,
    sink: SlackSink,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    drill_token = _drill_token(tmp_path)
    guardrails = {**load_reference_policy().get("guardrails", {}), "enforce_drills": True}
    async with chain(inputs={"http": _http(drill_token)}, guardrails=guardrails) as responder:
        await replay(
            seeded,
            capsys,
            responder.http_url,
            run_id,
            "shell-in-serving-pod",
            live=False,
            extra=("--token-file", str(drill_token)),
        )
        code, verdicts = await run_verify(responder, capsys, run_id, "shell-in-serving-pod")
    assert code == 0, verdicts
    assert "PASS  shell-in-serving-pod  [quarantined]  quarantined" in verdicts
    assert _pod_labels(seeded, "torchserve").get(QUARANTINE_LABEL) == "true"
    post = next(m for m in sink.all_messages() if m.thread_ts is None)
    assert (
        "Drills are enforced (guardrails.enforce_drills): what it did to the pod is real."
        in (post.blocks[1]["text"]["text"])
    )


async def test_a_replay_without_the_drill_token_is_refused_not_acted_on(
    chain: ChainFactory,
    seeded: Seeded,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's replay line pointed at a responder with a sender's credential (here: none, the
    input takes anyone's): refused, nothing journaled or done; --live sends it as Falco's."""
    async with chain(inputs={"http": _http(_drill_token(tmp_path))}) as responder:
        argv = ["replay", "shell-in-serving-pod", "--to", responder.http_url, "--run-id", run_id]
        argv += ["--pod", pod_ref(seeded, "torchserve"), "--kubeconfig", seeded.kubeconfig]
        code, out = await cli(argv, capsys)
        assert code == 1, out
        assert "HTTP 403: the request asks to be a drill (header Serving-Guard-Drill)" in out
        assert "nothing was delivered" in out
        async with ResponderClient(responder.http_url, ClientAuth(token=trail_token(responder))) as client:
            assert await client.audit(run_id=run_id) == []
    assert QUARANTINE_LABEL not in _pod_labels(seeded, "torchserve")


async def test_replay_over_grpc_needs_live(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = await cli(
        ["replay", "drift-exec", "--pod", "a/b", "--forge", "--grpc", "unix:///tmp/sg-never.sock"], capsys
    )
    assert code == 2
    assert "--grpc cannot send a drill (the gRPC input tells no sender from Falco)" in out
    assert "add --live to send them so" in out and "Traceback" not in out


async def test_replay_live_with_the_drill_token_says_they_were_taken_as_a_drill(
    chain: ChainFactory,
    seeded: Seeded,
    run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """review-drills L1: --live does not make the drill token's alerts Falco's."""
    drill_token = _drill_token(tmp_path)
    async with chain(inputs={"http": _http(drill_token)}) as responder:
        out = await replay(
            seeded,
            capsys,
            responder.http_url,
            run_id,
            "shell-in-serving-pod",
            extra=("--token-file", str(drill_token)),
        )
    assert "note: the responder took them as a drill all the same (sent with its drill token" in out, out
    printed = next(line for line in out.splitlines() if line.startswith("check the responder: "))
    assert "--expect shell-in-serving-pod=dry_run" in printed, printed
