"""`serving-guard demo`: the whole chain on one machine, no cluster and no network.

A Kubernetes API emulator seeded with a realistic serving namespace, a local Slack, a throwaway
PKI, a Falco-compatible gRPC outputs server, and the real responder (its HTTP input over mutual
TLS, its gRPC input connected to that server). Every scenario's alerts are replayed for its pod,
some through HTTP and some through gRPC, plus a forged alert that must be refused; then each
expectation is checked through the responder's own audit API and against the Slack sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from responder.client import ClientAuth, ResponderClient
from responder.cluster.api import KubeGateway
from responder.commands.serve import build_responder
from responder.config import Cluster, Config, load_config
from responder.errors import UserError
from responder.logs import setup_logging
from simulators.alerts import RuleSpec, ScenarioAlert, check_rules_defined, scenario_alerts
from simulators.cluster_emulator import RunningCluster
from simulators.demo_by_hand import ByHandStep, confirm_by_hand, trial_incident
from simulators.falco_grpc_server import FalcoGrpcServer, ServerTLS
from simulators.identity import PodIdentity, forged_identity, read_identity
from simulators.pki import TestPKI, make_test_pki
from simulators.replay import Delivery, post_alerts
from simulators.scenario import Expect, Outcome, Scenario, load_reference_policy
from simulators.seed import SeededPod, seed_serving_cluster
from simulators.slack_sink import DEFAULT_TOKEN, RunningSlackSink, SinkMessage, SlackSink
from simulators.verify import Expectation, Verdict, poll

FORGED_CASE = "forged-alert"
# The forged alert copies this scenario's alerts, aimed at this seeded pod with a random container id.
FORGED_FROM = "shell-in-serving-pod"
FORGED_POD = "vllm"
# The drill replays the same scenario with the drill token, on the pod whose real shell alert the
# demo acts on: its own incident, decided in dry-run, posted as a DRILL (the real one is not folded).
DRILL_CASE = "drill"
DRILL_FROM = FORGED_FROM
DEFAULT_CHANNEL = "#sec-alerts"


# What a demo run leaves in its --workdir, and the file that says a directory is a demo's. The next
# run there removes exactly these (never anything else) so that it starts with an empty journal.
WORKDIR_MARKER = ".serving-guard-demo"
WORKDIR_FILES = (
    "config.yaml",
    "kubeconfig.json",
    "slack-token",
    "audit-token",
    "drill-token",
    "responder.log",
    "journal.db",
    "journal.db-wal",
    "journal.db-shm",
    "journal.db-journal",
    "journal.db.lock",
)
PKI_DIR = "pki"
PKI_FILES = (
    "ca.crt",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
    "rogue-ca.crt",
    "rogue-client.crt",
    "rogue-client.key",
    "other-client.crt",
    "other-client.key",
)
_MARKER_TEXT = (
    "This directory is a `serving-guard demo --workdir`. Each demo run here first removes the files\n"
    "a previous run left, and nothing else: "
    + ", ".join([*WORKDIR_FILES, *(f"{PKI_DIR}/{name}" for name in PKI_FILES)])
    + ".\n"
)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def prepare_workdir(workdir: Path) -> None:
    """Make ``workdir`` ready for a demo run: created if missing; if a previous demo run used it (it
    holds the marker), what that run left is removed; any other non-empty directory is refused.
    Every problem is a UserError naming --workdir and the path."""
    where = f"--workdir {workdir}"
    try:
        if workdir.exists() and not workdir.is_dir():
            raise UserError(f"{where}: exists and is not a directory")
    except OSError as exc:
        raise UserError(f"{where}: cannot look at the path: {exc.strerror or exc}") from None
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{where}: cannot create the directory: {exc.strerror or exc}") from None
    try:
        entries = {entry.name for entry in workdir.iterdir()}
    except OSError as exc:
        raise UserError(f"{where}: cannot list the directory: {exc.strerror or exc}") from None
    if entries and WORKDIR_MARKER not in entries:
        raise UserError(
            f"{where}: not empty and not a previous demo run's directory (it has no {WORKDIR_MARKER}); "
            "give a new or empty directory"
        )
    pki = workdir / PKI_DIR
    if PKI_DIR in entries and not _is_dir(pki):
        raise UserError(f"{where}: {PKI_DIR} is in the way (not a directory); the demo writes its PKI there")
    leftovers = [workdir / name for name in WORKDIR_FILES if name in entries]
    if PKI_DIR in entries:
        leftovers += [pki / name for name in PKI_FILES if os.path.lexists(pki / name)]
    for path in leftovers:
        try:
            path.unlink()
        except OSError as exc:
            raise UserError(
                f"{where}: cannot remove {path.relative_to(workdir)}, left by a previous demo run: "
                f"{exc.strerror or exc}"
            ) from None
    if PKI_DIR in entries:
        with contextlib.suppress(OSError):  # kept when it holds anything else
            pki.rmdir()
    try:
        (workdir / WORKDIR_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{where}: cannot write in the directory: {exc.strerror or exc}") from None


@dataclass
class DemoCase:
    name: str
    scenario: Scenario
    pod: SeededPod
    input: str
    expect: Expect
    forged: bool = False
    drill: bool = False
    alerts: list[ScenarioAlert] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass
class DemoCheck:
    """One case's verdict plus what the demo checks beyond the audit trail."""

    case: DemoCase
    verdict: Verdict
    slack_messages: list[SinkMessage]
    problems: list[str]

    @property
    def passed(self) -> bool:
        return self.verdict.passed and not self.problems

    @property
    def reason(self) -> str:
        return "; ".join([*([] if self.verdict.passed else [self.verdict.reason]), *self.problems]) or (
            self.verdict.reason
        )


@dataclass
class DemoResult:
    run_id: str
    checks: list[DemoCheck]
    started_ns: int
    finished_ns: int
    config_text: str
    # Slack channel ids (as messages carry them) to the names the config uses.
    channel_names: dict[str, str] = field(default_factory=dict)
    # The trial's predicted quarantine, run by hand (None: no case had a prediction).
    by_hand: ByHandStep | None = None

    @property
    def expectations(self) -> int:
        return len(self.checks) + (self.by_hand is not None)

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks) and (self.by_hand is None or self.by_hand.passed)


# The order the table tells the story in (the issue's); scenarios not listed follow by name.
STORY = (
    "shell-in-serving-pod",
    "reverse-shell-one-liner",
    "unexpected-model-load",
    "model-tampering",
    "anomalous-egress",
    "runtime-download",
    "drift-exec",
    "credential-read",
    "benign-serving",
)


def _story_order(scenario: Scenario) -> tuple[int, str]:
    return (STORY.index(scenario.name) if scenario.name in STORY else len(STORY), scenario.name)


def left_out(scenarios: Sequence[Scenario]) -> list[Scenario]:
    """The scenarios without a demo part (no seeded pod or input to send them with): the demo
    leaves them out; replay and verify still use them."""
    return [scenario for scenario in scenarios if scenario.demo is None]


# Why the demo leaves a scenario out, and how to send it instead: the console line and the report's
# header are both built from these.
LEFT_OUT_WHY = "has no demo part (the seeded pod and input to send it with)"


def replay_command(scenario: Scenario) -> str:
    return f"serving-guard replay {scenario.name}"


def left_out_line(scenario: Scenario) -> str:
    """What the demo says of a scenario it leaves out (one line)."""
    return f"demo: {scenario.name} {LEFT_OUT_WHY}: left out; send its alerts with {replay_command(scenario)}"


def plan_cases(
    scenarios: Sequence[Scenario], pods: Mapping[str, SeededPod], overrides: Mapping[str, Outcome]
) -> list[DemoCase]:
    cases = []
    for scenario in sorted(scenarios, key=_story_order):
        if scenario.demo is None:
            continue  # no demo part: left out (demo_command says so, see left_out)
        expect = scenario.demo_expect()
        override = overrides.get(scenario.name)
        if override is not None:
            expect = Expect(outcome=override, slack=expect.slack and override is not Outcome.SILENT)
        cases.append(DemoCase(scenario.name, scenario, pods[scenario.demo.pod], scenario.demo.input, expect))
    source = next((s for s in scenarios if s.name == FORGED_FROM), None)
    if source is not None:
        expect = Expect(outcome=overrides.get(FORGED_CASE, Outcome.UNVERIFIED), slack=True)
        cases.append(DemoCase(FORGED_CASE, source, pods[FORGED_POD], "http", expect, forged=True))
    drilled = next((s for s in scenarios if s.name == DRILL_FROM and s.demo is not None), None)
    if drilled is not None and drilled.demo is not None:
        expect = Expect(outcome=overrides.get(DRILL_CASE, Outcome.DRY_RUN), slack=True)
        cases.append(DemoCase(DRILL_CASE, drilled, pods[drilled.demo.pod], "http", expect, drill=True))
    return cases


def demo_config_data(
    workdir: Path, kubeconfig: str, pki: TestPKI, grpc_address: str, sink: SlackSink
) -> dict[str, Any]:
    """The responder config the demo runs: the reference policy plus loopback plumbing."""
    token_file = workdir / "slack-token"
    token_file.write_text(DEFAULT_TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    # The audit trail's readers have a token of their own: a sender's certificate cannot read it.
    audit_token_file = workdir / "audit-token"
    audit_token_file.write_text(secrets.token_hex(16) + "\n", encoding="utf-8")
    audit_token_file.chmod(0o600)
    # The security team's drills have theirs: what they send is a drill, decided in dry-run.
    drill_token_file = workdir / "drill-token"
    drill_token_file.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
    drill_token_file.chmod(0o600)
    reference = load_reference_policy()
    slack = {
        "mode": "bot",
        "token": {"file": str(token_file)},
        "default_channel": DEFAULT_CHANNEL,
        "base_url": sink.base_url,
        "timeout_seconds": 5,
        **(reference.get("slack") or {}),
    }
    return {
        "inputs": {
            "http": {
                "listen": "127.0.0.1:0",
                "tls": {
                    "cert_file": pki.server.cert_file,
                    "key_file": pki.server.key_file,
                    "client_ca_file": pki.ca_file,
                },
                "audit_token": {"file": str(audit_token_file)},
                "drill_token": {"file": str(drill_token_file)},
            },
            "grpc": {
                "enabled": True,
                "address": grpc_address,
                "tls": {
                    "ca_file": pki.ca_file,
                    "cert_file": pki.client.cert_file,
                    "key_file": pki.client.key_file,
                    "server_name": "localhost",
                },
                "poll_interval_seconds": 0.05,
                "backoff": {"initial_seconds": 0.05, "max_seconds": 0.5},
            },
        },
        "server": {"metrics_listen": "127.0.0.1:0"},
        "cluster": {
            "kubeconfig": kubeconfig,
            "cache_ttl_seconds": 5,
            "retry": {"attempts": 3, "initial_backoff_seconds": 0.05},
        },
        "journal": {"path": str(workdir / "journal.db"), "commit_interval_ms": 1},
        "logging": {"level": "info", "format": "text"},
        **{key: value for key, value in reference.items() if key != "slack"},
        "slack": slack,
    }


@contextlib.contextmanager
def _responder_logs(path: Path, verbose: bool) -> Iterator[None]:
    """The responder's logs go to a file (the demo prints only its table), restored afterwards."""
    logger = logging.getLogger("serving_guard")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    with open(path, "a", encoding="utf-8") as stream:
        setup_logging("info", "text", stream=None if verbose else stream)
        try:
            yield
        finally:
            logger.handlers[:], logger.level, logger.propagate = saved


async def _in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def _identity_for(case: DemoCase, gateway: KubeGateway) -> PodIdentity:
    if case.forged:
        # A forger who knows the pod's name and even its node, but not its container ids.
        return forged_identity(case.pod.namespace, case.pod.name, hostname=case.pod.node)
    return read_identity(gateway, case.pod.namespace, case.pod.name)


def _slack_problems(case: DemoCase, verdict: Verdict, messages: Sequence[SinkMessage]) -> list[str]:
    if not case.expect.slack or not verdict.passed:
        return []
    if not messages:
        return ["the audit trail says Slack was sent, but the Slack sink has no message for the incident"]
    if case.drill and not messages[0].text.startswith("DRILL: "):
        return [f"the drill's Slack message does not say it is a drill: {messages[0].text[:80]!r}"]
    return []


def _drill_problems(case: DemoCase) -> list[str]:
    """A drill the responder did not say it took as one (its answer to each alert says so)."""
    if not case.drill:
        return []
    return [
        f"{d.alert.rule}: delivered, but not taken as a drill"
        for d in case.deliveries
        if d.ok and not d.drill
    ]


def _messages_by_incident(sink: SlackSink) -> dict[str, list[SinkMessage]]:
    found: dict[str, list[SinkMessage]] = {}
    for message in sink.all_messages():
        payload = (message.metadata or {}).get("event_payload") or {}
        incident = payload.get("incident_id")
        if isinstance(incident, str):
            found.setdefault(incident, []).append(message)
    return found


async def run_demo(
    scenarios: Sequence[Scenario],
    specs: Mapping[str, RuleSpec],
    workdir: Path,
    *,
    overrides: Mapping[str, Outcome] | None = None,
    verbose: bool = False,
    timeout: float = 30.0,
) -> DemoResult:
    # A rules file the user chose must define what every scenario (and the forged copy) sends.
    check_rules_defined(scenarios, specs)
    run_id = secrets.token_hex(6)
    started_ns = time.time_ns()
    with (
        _responder_logs(workdir / "responder.log", verbose),
        RunningCluster() as cluster,
        RunningSlackSink(SlackSink(token=DEFAULT_TOKEN)) as sink,
    ):
        pods: dict[str, SeededPod] = cluster.call(seed_serving_cluster, cluster.emulator)
        kubeconfig = cluster.write_kubeconfig(str(workdir / "kubeconfig.json"))
        pki = make_test_pki(workdir / "pki")
        grpc_server = FalcoGrpcServer(
            "127.0.0.1:0", tls=ServerTLS(pki.server.cert_file, pki.server.key_file, pki.ca_file)
        )
        grpc_server.start()
        try:
            config_path = workdir / "config.yaml"
            data = demo_config_data(workdir, kubeconfig, pki, grpc_server.address, sink)
            config_text = yaml.safe_dump(data, sort_keys=False)
            config_path.write_text(config_text, encoding="utf-8")
            config: Config = load_config(str(config_path))
            channels = {config.slack.default_channel, *(p.slack.channel for p in config.policies)}
            checks, by_hand = await _run_cases(
                config,
                config_path,
                scenarios,
                specs,
                pods,
                kubeconfig,
                pki,
                grpc_server,
                sink,
                run_id,
                overrides or {},
                timeout,
            )
            names = {sink.channel_id(name): name for name in channels if name}
        finally:
            grpc_server.stop(grace=0.5)
    channel_names = {channel_id: name for channel_id, name in names.items() if channel_id}
    return DemoResult(run_id, checks, started_ns, time.time_ns(), config_text, channel_names, by_hand)


async def _send(
    cases: Sequence[DemoCase],
    identities: Sequence[PodIdentity],
    client: ResponderClient,
    drill_client: ResponderClient,
    grpc_server: FalcoGrpcServer,
    run_id: str,
    specs: Mapping[str, RuleSpec],
    timeout: float,
) -> None:
    """Each case's alerts, the way its scenario says (HTTP or gRPC; a drill with the drill token)."""
    grpc_cases = []
    for case, identity in zip(cases, identities, strict=True):
        # Built just before sending: the alert's time is when "Falco" saw it.
        tag = FORGED_CASE if case.forged else DRILL_CASE if case.drill else None
        case.alerts = scenario_alerts(case.scenario, identity, run_id, specs, tag=tag)
        if case.drill:
            case.deliveries = await post_alerts(drill_client, case.alerts, drill=True)
        elif case.input == "http" and case.alerts:
            case.deliveries = await post_alerts(client, case.alerts)
        elif case.alerts:
            grpc_server.publish_many([item.alert for item in case.alerts])
            grpc_cases.append(case)
    if grpc_cases:
        drained = await _in_thread(grpc_server.wait_drained, timeout)
        for case in grpc_cases:
            detail = f"collected from {grpc_server.address}" if drained else "not collected in time"
            case.deliveries = [Delivery(item, drained, detail) for item in case.alerts]


async def _run_cases(
    config: Config,
    config_path: Path,
    scenarios: Sequence[Scenario],
    specs: Mapping[str, RuleSpec],
    pods: Mapping[str, SeededPod],
    kubeconfig: str,
    pki: TestPKI,
    grpc_server: FalcoGrpcServer,
    sink: SlackSink,
    run_id: str,
    overrides: Mapping[str, Outcome],
    timeout: float,
) -> tuple[list[DemoCheck], ByHandStep | None]:
    cases = plan_cases(scenarios, pods, overrides)
    responder = build_responder(config, str(config_path))
    await responder.start()
    try:
        assert responder.http_url is not None  # the demo config enables the HTTP input
        # The replay path: the pod identity is read from the (emulated) Kubernetes API.
        gateway = KubeGateway.from_config(Cluster(kubeconfig=kubeconfig))
        try:
            identities = [await _in_thread(_identity_for, case, gateway) for case in cases]
        finally:
            gateway.close()
        sender = ClientAuth(ca_file=pki.ca_file, cert_file=pki.client.cert_file, key_file=pki.client.key_file)
        drill_token = config.inputs.http.drill_token
        assert drill_token is not None  # the demo config gives the drills their own token
        driller = ClientAuth(ca_file=pki.ca_file, token=drill_token.read("inputs.http.drill_token"))
        audit_token = config.inputs.http.audit_token
        assert audit_token is not None  # the demo config gives the trail's readers their own token
        reader = ClientAuth(ca_file=pki.ca_file, token=audit_token.read("inputs.http.audit_token"))
        async with (
            ResponderClient(responder.http_url, sender) as client,
            ResponderClient(responder.http_url, driller) as drill_client,
            ResponderClient(responder.http_url, reader) as audit_reader,
        ):
            await _send(cases, identities, client, drill_client, grpc_server, run_id, specs, timeout)
            assert responder.pipeline is not None  # started
            await responder.pipeline.drain(timeout=timeout)
            # Every alert sent is a step the trail must show; only the case's pod counts (the
            # control's silence, too, counts only there).
            expectations = [
                Expectation.of(
                    c.scenario,
                    run_id,
                    c.expect,
                    name=c.name,
                    steps=[item.step for item in c.alerts if item.carries_step] if c.alerts else None,
                    pod=f"{c.pod.namespace}/{c.pod.name}",
                )
                for c in cases
            ]
            verdicts = await poll(audit_reader, expectations, timeout=timeout, interval=0.05, settle=0.2)
        # A person confirms what the policy on trial predicted, with the command Slack gives.
        trial = trial_incident([(c.name, v.incident) for c, v in zip(cases, verdicts, strict=True)])
        by_hand = None
        if trial is not None:
            name, incident = trial
            posts = _messages_by_incident(sink).get(str(incident.get("incident_id"))) or []
            wake = responder.notifier.wake if responder.notifier is not None else None
            by_hand = (
                await confirm_by_hand(name, incident, posts[0], config_path, sink, wake, timeout)
                if posts
                else ByHandStep(name, (), None, "", "", ("the incident has no Slack message",))
            )
    finally:
        await responder.stop()
    messages = _messages_by_incident(sink)
    checks = []
    for case, verdict in zip(cases, verdicts, strict=True):
        incident_id = (verdict.incident or {}).get("incident_id")
        found = messages.get(str(incident_id), []) if incident_id else []
        problems = [f"{d.alert.rule}: not delivered: {d.detail}" for d in case.deliveries if not d.ok]
        problems += _slack_problems(case, verdict, found)
        problems += _drill_problems(case)
        checks.append(DemoCheck(case, verdict, found, problems))
    return checks, by_hand
