"""An alert from a container the pod's status does not list yet. Falco names a container from its
first syscall; the kubelet reports the run in the pod's status a second or so later. An attack in
a container's first second (a malicious model run at load, an entrypoint) must be decided on once
the status catches up, not called a forgery and left alone for the dedupe window."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from responder.alert_json import alert_from_mapping
from responder.audit.query import AuditQuery
from responder.audit.trail import load_trail
from responder.cluster.context import ContainerInfo, PodContext
from responder.cluster.enrich import PodDirectory, containers_of
from responder.cluster.live_check import LISTING_READS
from responder.cluster.verify import VerificationStatus, verify_alert
from responder.journal.store import report_from_record
from responder.notify.render import render_incident
from responder.records import pod_from_json, pod_to_json
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.scenario import Expect, Outcome, load_scenarios
from simulators.seed import SeededPod
from simulators.verify import Expectation, judge
from tests.helpers import FakeClock
from tests.notify.test_slack_render import text_of
from tests.responder.test_pipeline import LABEL, Seeded, labels, start_with_clock, submit_all
from tests.responder.test_pipeline_lookup_states import incidents
from tests.responder.test_quarantine import Harness
from tests.responder.test_verify_restarted_container import alert_from

STARTED_ID = hashlib.sha256(b"the container that just started").hexdigest()
# The same words for every id on the pod: Slack tells the channel once, not once per made-up id.
NOT_VERIFIED_YET = (
    "not verified yet: a container of the pod is starting or restarting and its id is not listed yet"
)
OTHER_ID = hashlib.sha256(b"another made-up id").hexdigest()


def status_of(name: str, state: dict[str, Any], container_id: str | None = None) -> dict[str, Any]:
    return {"name": name, "state": state, **({"containerID": container_id} if container_id else {})}


RUNNING = {"running": {"startedAt": "2026-12-05T10:00:00Z"}}
CREATING = {"waiting": {"reason": "ContainerCreating"}}


def pod_of(
    statuses: list[dict[str, Any]],
    *,
    containers: tuple[str, ...] = ("main",),
    init: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    restart_policy: str | None = None,
    phase: str = "Running",
    deleting: bool = False,
    own_policy: str | None = None,
) -> tuple[ContainerInfo, ...]:
    own = {"restartPolicy": own_policy} if own_policy else {}
    spec: dict[str, Any] = {"containers": [{"name": name, "image": "img", **own} for name in containers]}
    if init is not None:
        spec["initContainers"] = init
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    status: dict[str, Any] = {"phase": phase, "containerStatuses": statuses}
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    metadata = {"deletionTimestamp": "2026-12-05T10:00:00Z"} if deleting else {}
    return containers_of({"metadata": metadata, "spec": spec, "status": status})


@pytest.mark.parametrize(
    ("case", "containers", "awaiting"),
    [
        ("running, with its id", pod_of([status_of("main", RUNNING, "containerd://" + "a" * 64)]), False),
        (
            "an id and no state (the kubelet always writes one)",
            pod_of([{"name": "main", "containerID": "x://1"}]),
            False,
        ),
        ("no status yet", pod_of([]), True),
        ("being created: no id", pod_of([status_of("main", CREATING)]), True),
        (
            "backing off before a restart",
            pod_of([status_of("main", {"waiting": {"reason": "CrashLoopBackOff"}}, "x://1")]),
            True,
        ),
        (
            "stopped, restarted Always",
            pod_of([status_of("main", {"terminated": {"exitCode": 0}}, "x://1")]),
            True,
        ),
        (
            "stopped for good (restartPolicy Never)",
            pod_of([status_of("main", {"terminated": {"exitCode": 1}}, "x://1")], restart_policy="Never"),
            False,
        ),
        (
            "succeeded (OnFailure)",
            pod_of([status_of("main", {"terminated": {"exitCode": 0}}, "x://1")], restart_policy="OnFailure"),
            False,
        ),
        (
            "failed, restarted (OnFailure)",
            pod_of([status_of("main", {"terminated": {"exitCode": 2}}, "x://1")], restart_policy="OnFailure"),
            True,
        ),
        (
            "cannot be started: its image is not there",
            pod_of([status_of("main", {"waiting": {"reason": "ImagePullBackOff"}})]),
            False,
        ),
        (
            "its config is wrong",
            pod_of([status_of("main", {"waiting": {"reason": "CreateContainerConfigError"}})]),
            False,
        ),
        (
            "being deleted: nothing starts again",
            pod_of([status_of("main", {"terminated": {"exitCode": 0}}, "x://1")], deleting=True),
            False,
        ),
        (
            "its own restartPolicy (container restart rules) over the pod's",
            pod_of(
                [status_of("main", {"terminated": {"exitCode": 1}}, "x://1")],
                own_policy="Never",
            ),
            False,
        ),
        (
            "a pod that has finished",
            pod_of([status_of("main", {"terminated": {"exitCode": 0}}, "x://1")], phase="Succeeded"),
            False,
        ),
    ],
)
def test_a_container_awaits_a_run_while_its_status_may_lag(
    case: str, containers: tuple[ContainerInfo, ...], awaiting: bool
) -> None:
    [main] = containers
    assert main.awaiting_run is awaiting, case


def test_an_init_step_that_succeeded_runs_no_more_but_a_sidecar_restarts() -> None:
    done = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    main, setup, proxy = pod_of(
        [status_of("main", RUNNING, "x://1")],
        init=[{"name": "setup", "image": "i"}, {"name": "proxy", "image": "i", "restartPolicy": "Always"}],
        init_statuses=[status_of("setup", done, "x://2"), status_of("proxy", done, "x://3")],
    )
    assert (main.awaiting_run, setup.awaiting_run, proxy.awaiting_run) == (False, False, True)
    failed_setup = pod_of(
        [status_of("main", CREATING)],
        init=[{"name": "setup", "image": "i"}],
        init_statuses=[status_of("setup", {"terminated": {"exitCode": 1}}, "x://2")],
    )[1]
    assert failed_setup.awaiting_run  # tried again


def test_the_check_says_not_listed_yet_only_for_a_pod_with_a_container_awaiting_its_run(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    settled = harness.pod(vllm)
    alert = alert_from(vllm, STARTED_ID)
    assert verify_alert(alert, settled, check_node=True).status is VerificationStatus.UNVERIFIED
    starting = _with_sidecar_starting(settled)
    said = verify_alert(alert, starting, check_node=True)
    assert said.status is VerificationStatus.NOT_LISTED_YET
    assert said.reason == (
        f"container.id {STARTED_ID[:12]} is not listed in the pod's status yet: the status does not show"
        " the current run of proxy yet (starting or restarting)"
    )
    # The node is checked all the same: a starting container is no cover for another node's alert.
    elsewhere = dataclasses.replace(alert, hostname="some-other-node")
    assert verify_alert(elsewhere, starting, check_node=True).status is VerificationStatus.UNVERIFIED
    # Journaled and read back as it was.
    assert pod_from_json(pod_to_json(starting)) == starting


def _with_sidecar_starting(pod: PodContext) -> PodContext:
    sidecar = ContainerInfo(name="proxy", image="envoy", init=True, awaiting_run=True)
    return dataclasses.replace(pod, containers=(*pod.containers, sidecar))


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def set_status(
    running: RunningCluster, pod: SeededPod, container_id: str | None, state: dict[str, Any]
) -> None:
    """The pod's container as the kubelet reports it: ``state``, with ``container_id`` if any."""
    stored = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    assert stored is not None
    status = stored["status"]["containerStatuses"][0]
    status["state"] = state
    if container_id is None:
        status.pop("containerID", None)
    else:
        status["containerID"] = "containerd://" + container_id
    running.call(running.emulator.put_object, "v1/pods", stored)


def pod_reads(running: RunningCluster, pod: SeededPod) -> int:
    return running.emulator.fetches[("pods", pod.name)]


async def later(seconds: float, do: Any, *args: Any) -> None:
    await asyncio.sleep(seconds)
    await asyncio.to_thread(do, *args)


async def test_an_attack_in_a_containers_first_second_is_quarantined_once_the_kubelet_lists_it(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, None, CREATING)  # the runtime started it; the kubelet has not said so
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    try:
        listed = asyncio.create_task(later(0.5, set_status, running, vllm, STARTED_ID, RUNNING))
        await submit_all(responder, [alert_from(vllm, STARTED_ID)])
        await listed
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "verified"
        assert not opened["decision"]["unverified"]
        assert labels(running, vllm)[LABEL] == "true"
    finally:
        await responder.stop()


async def test_a_restart_just_after_the_pod_was_read_waits_too(tmp_path: Path, seeded: Seeded) -> None:
    """The pod was read (and cached) a moment before its container restarted: the cached pod shows
    nothing starting, so it is read afresh before anything is decided, and the alert waits."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    try:
        # An alert of a rule no policy isolates reads the pod into the cache.
        warm = falco_alert(vllm, "Some other rule", "Notice", "x", {"proc.name": "ls"})
        await submit_all(responder, [alert_from_mapping(warm)])
        set_status(running, vllm, vllm.container_id, {"waiting": {"reason": "CrashLoopBackOff"}})
        listed = asyncio.create_task(later(0.5, set_status, running, vllm, STARTED_ID, RUNNING))
        await submit_all(responder, [alert_from(vllm, STARTED_ID)])
        await listed
        shells = incidents(responder)
        assert [i["verification"]["status"] for i in shells] == ["verified"]
        assert labels(running, vllm)[LABEL] == "true"
    finally:
        await responder.stop()


async def test_a_restart_the_status_still_shows_as_the_old_run_waits_too(
    tmp_path: Path, seeded: Seeded
) -> None:
    """After `kill 1` the status keeps showing the old run as running until the kubelet reports the
    new one: nothing is starting as far as the API says, yet the alert's id is the new run's. It
    waits for the listing as a starting container's does, rather than being called a possible
    forgery and folding the attack's repeats for the whole window."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    try:
        assert vllm.container_id != STARTED_ID
        listed = asyncio.create_task(
            later(1.5, set_status, running, vllm, STARTED_ID, RUNNING)  # past the first re-read
        )
        await submit_all(responder, [alert_from(vllm, STARTED_ID)])
        await listed
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "verified"
        assert labels(running, vllm)[LABEL] == "true"
    finally:
        await responder.stop()


async def test_a_made_up_id_on_a_running_pod_is_still_a_possible_forgery(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The same wait for an id the pod never lists ends in the forgery verdict, after the reads."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    try:
        before = pod_reads(running, vllm)
        await submit_all(responder, [alert_from(vllm, OTHER_ID)])
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "unverified"
        assert opened["decision"]["unverified"]
        assert LABEL not in labels(running, vllm)
        assert (
            pod_reads(running, vllm) - before <= 2 + LISTING_READS
        )  # bounded: the cache, a fresh read, the waits
    finally:
        await responder.stop()


# A simulator run's marker (as `serving-guard simulate` tags its processes), and what `serving-guard
# verify` expects of that scenario.
MARKER = "# sg-run=r1.shell-in-serving-pod.1"
SHELL_EXPECTATION = Expectation.of(
    load_scenarios().by_name["shell-in-serving-pod"], "r1", Expect(outcome=Outcome.QUARANTINED, slack=False)
)


def trail(responder: Responder) -> list[dict[str, Any]]:
    with responder.journal.reader() as conn:
        return load_trail(conn, AuditQuery(run_id="r1"))


async def test_a_container_still_not_listed_is_decided_again_not_called_a_forgery(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, None, CREATING)
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        await submit_all(responder, [alert_from(vllm, STARTED_ID, **{"proc.cmdline": f"sh -c 0 {MARKER}"})])
        # serving-guard verify waits for the decision to come, rather than calling it a miss.
        verdict = judge(SHELL_EXPECTATION, trail(responder))
        assert not verdict.passed and not verdict.settled
        assert "(not_listed_yet: container.id" in verdict.reason
        assert verdict.reason.endswith("; the responder decides it again on the rule's next alert")
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "not_listed_yet"
        assert not opened["decision"]["unverified"]
        [withheld] = opened["decision"]["withheld"]
        assert withheld == NOT_VERIFIED_YET
        assert opened["verification"]["reason"].startswith(f"container.id {STARTED_ID[:12]} is not listed")
        assert LABEL not in labels(running, vllm)
        record = responder.journal.incident_record(opened["id"])
        assert record is not None
        report = report_from_record(record)
        assert report is not None
        text = text_of(render_incident(report))
        assert ":hourglass: Not verified yet: container.id" in text and "forging" not in text

        set_status(running, vllm, STARTED_ID, RUNNING)
        clock.advance(11)
        await submit_all(responder, [alert_from(vllm, STARTED_ID, **{"proc.cmdline": f"sh -c 1 {MARKER}"})])
        assert [i["verification"]["status"] for i in incidents(responder)] == ["not_listed_yet", "verified"]
        assert labels(running, vllm)[LABEL] == "true"
        # ... and judges the incident the repeat opened, not the one it replaced.
        verdict = judge(SHELL_EXPECTATION, trail(responder))
        assert verdict.passed and verdict.verified == "verified" and verdict.outcome == "quarantined"
    finally:
        await responder.stop()


async def test_alerts_waiting_on_one_pod_share_its_reads(tmp_path: Path, seeded: Seeded) -> None:
    """Made-up ids for a starting pod (a forger's storm, or genuine processes): each read while
    they wait serves them all, so waiting costs the API one read a second, not one per alert."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, None, CREATING)
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    try:
        before = pod_reads(running, vllm)
        made_up = [hashlib.sha256(f"made-up {n}".encode()).hexdigest() for n in range(6)]
        await submit_all(responder, [alert_from(vllm, container_id) for container_id in made_up])
        opened = incidents(responder)
        assert [i["verification"]["status"] for i in opened] == ["not_listed_yet"] * 6
        assert [i["decision"]["withheld"] for i in opened] == [[NOT_VERIFIED_YET]] * 6
        reads = pod_reads(running, vllm) - before
        # The first read (then cached); a fresh read, shared by the alerts that ask while it is
        # under way (at most one each); LISTING_READS reads a second apart, shared by all; none
        # under the pod's lock (the cache holds the last). Each alone would read 1 + 1 + 3.
        assert 1 + 1 + LISTING_READS <= reads <= 1 + len(made_up) + LISTING_READS, reads
    finally:
        await responder.stop()


@pytest.mark.parametrize("clock_ahead", [3600, -3600], ids=["an hour old", "an hour ahead"])
async def test_an_old_alert_does_not_wait_and_is_a_possible_forgery(
    tmp_path: Path, seeded: Seeded, clock_ahead: int
) -> None:
    """The kubelet's lag explains no alert older than LISTING_LAG_SECONDS: one replayed from an hour
    ago, or held up on its way, is decided at once, as any id the pod does not have; nor one dated
    an hour ahead of the responder's clock (review-oncall 1: forever "not verified yet")."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    set_status(running, vllm, None, CREATING)
    clock = FakeClock()
    clock.advance(clock_ahead)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        before = pod_reads(running, vllm)
        await submit_all(responder, [alert_from(vllm, STARTED_ID)])
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "unverified"
        if clock_ahead < 0:
            assert "ahead of the responder's clock" in opened["verification"]["reason"]
        assert pod_reads(running, vllm) - before == 2  # read, then read afresh: no waiting reads
    finally:
        await responder.stop()


def test_an_alert_dated_ahead_of_the_clock_is_not_excused_by_a_starting_container(
    harness: Harness, seeded: Seeded
) -> None:
    """A forger dating every alert ahead (time: 2100-...) made them forever "young": on a pod with a
    container starting or restarting (CrashLoopBackOff, a sidecar), a made-up id was "not verified
    yet" and decided again on every repeat, never told as a possible forgery (review-oncall 1)."""
    vllm = seeded[1]["vllm"]
    starting = _with_sidecar_starting(harness.pod(vllm))
    alert = alert_from(vllm, STARTED_ID)
    now = alert.time_ns
    # Within what the clocks may differ by (2 minutes), as before.
    ahead = verify_alert(alert, starting, check_node=True, now_ns=now - 100 * 10**9)
    assert ahead.status is VerificationStatus.NOT_LISTED_YET
    said = verify_alert(alert, starting, check_node=True, now_ns=now - 3600 * 10**9)
    assert said.status is VerificationStatus.UNVERIFIED
    assert said.reason == (
        f"container.id {STARTED_ID[:12]} is not a container of the pod; its event is dated 3600 s ahead"
        " of the responder's clock (forged, or the clock of the node it names is wrong)"
    )
    # An id the pod has is verified whatever the time (a node's clock may be wrong).
    own = alert_from(vllm, vllm.container_id)
    assert verify_alert(own, starting, check_node=True, now_ns=now - 3600 * 10**9).verified


def test_a_pod_whose_containers_all_run_is_checked_as_before(harness: Harness, seeded: Seeded) -> None:
    vllm = seeded[1]["vllm"]
    pod = harness.pod(vllm)
    assert pod.awaiting_runs == ()
    assert verify_alert(alert_from(vllm, vllm.container_id), pod, check_node=True).verified


async def test_a_read_that_has_finished_is_not_shared_again(tmp_path: Path, seeded: Seeded) -> None:
    """A waiter that finds the pod's last read done (its done-callback not run yet) takes a new
    one: reusing it would spend its reads in no time, without waiting for the kubelet."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    pipeline = responder.pipeline
    assert pipeline is not None
    try:
        first = await pipeline._pod_check._shared_read(vllm.namespace, vllm.name, pause=0.0)
        finished = asyncio.get_running_loop().create_future()
        finished.set_result(first)
        pipeline._pod_check._listing_reads[(vllm.namespace, vllm.name, 0.0)] = finished  # type: ignore[assignment]
        before = pod_reads(running, vllm)
        again = await pipeline._pod_check._shared_read(vllm.namespace, vllm.name, pause=0.0)
        assert again is not first and pod_reads(running, vllm) == before + 1
    finally:
        await responder.stop()


class ChangedDuringRead:
    """The API as another incident's action meets it: the pod is changed (and forgotten by the
    directory, as every action does) while this read of it is on its way back."""

    def __init__(self, gateway: Any) -> None:
        self._gateway = gateway
        self.directory: PodDirectory | None = None

    def get_pod(self, namespace: str, name: str) -> Any:
        raw = self._gateway.get_pod(namespace, name)
        assert self.directory is not None
        self.directory.forget(namespace, name)
        return raw

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._gateway, attribute)


def test_a_read_that_an_action_overtook_is_not_kept(harness: Harness, seeded: Seeded) -> None:
    """A read before the pod's lock may meet another incident's quarantine: it goes back to its
    caller, but the next lookup (the check under the lock) reads the pod anew instead of taking
    the copy from before the label."""
    vllm = seeded[1]["vllm"]
    gateway = ChangedDuringRead(harness.gateway)
    directory = PodDirectory(gateway, ttl_seconds=60)  # type: ignore[arg-type]
    gateway.directory = directory
    running = seeded[0]
    before = pod_reads(running, vllm)
    assert directory.lookup(vllm.namespace, vllm.name).pod is not None
    assert directory.lookup(vllm.namespace, vllm.name).pod is not None
    assert pod_reads(running, vllm) - before == 2  # not kept: read again
    plain = PodDirectory(harness.gateway, ttl_seconds=60)
    before = pod_reads(running, vllm)
    plain.lookup(vllm.namespace, vllm.name)
    plain.lookup(vllm.namespace, vllm.name)
    assert pod_reads(running, vllm) - before == 1  # kept, as any read nothing overtook


class OtherPodChangedDuringRead(ChangedDuringRead):
    """Another incident's action on a different pod lands while this read is on its way back."""

    def get_pod(self, namespace: str, name: str) -> Any:
        raw = self._gateway.get_pod(namespace, name)
        assert self.directory is not None
        self.directory.forget(namespace, "another-pod")
        return raw


def test_a_fresh_read_that_an_action_overtook_leaves_no_older_copy_behind(
    harness: Harness, seeded: Seeded
) -> None:
    """The pod cached by an earlier alert, then read afresh (a container restarted) while an action
    on another pod lands: the fresh read is not kept, and neither is the older copy it would have
    replaced, so the check under the lock reads the pod anew rather than judging the alert
    against the run from before the restart (a possible forgery, decided for the whole window)."""
    vllm = seeded[1]["vllm"]
    gateway = OtherPodChangedDuringRead(harness.gateway)
    directory = PodDirectory(gateway, ttl_seconds=60)  # type: ignore[arg-type]
    older = PodDirectory(harness.gateway, ttl_seconds=60).lookup(vllm.namespace, vllm.name)
    assert older.pod is not None
    directory._cache.put(("pod", vllm.namespace, vllm.name), older)  # what an earlier alert cached
    gateway.directory = directory
    running = seeded[0]
    before = pod_reads(running, vllm)
    assert directory.lookup(vllm.namespace, vllm.name, fresh=True).pod is not None
    gateway.directory = None  # nothing lands during the next read
    gateway.get_pod = harness.gateway.get_pod  # type: ignore[method-assign]
    assert directory.lookup(vllm.namespace, vllm.name).pod is not None
    assert pod_reads(running, vllm) - before == 2  # the older copy was not handed out
