"""`serving-guard replay SCENARIO...`: send the Falco alerts the scenarios produce, for one pod.

The pod's identity (container id, node) is read from the Kubernetes API (kubeconfig or in-cluster)
so the responder can verify the alerts; ``--forge`` sends a random container id instead, which a
responder must refuse as unverified. Exactly one way out: ``--to URL`` (HTTP input), ``--grpc
ADDRESS`` (serve them as Falco's gRPC outputs service until the responder collected them), or
``--file PATH`` (Falco JSON lines for `serving-guard ingest`; '-' for stdout).

A replay is a drill unless ``--live``: over ``--to`` each alert asks to be one (the responder
refuses it unless it is sent with the drill token, inputs.http.drill_token, and journals, decides
and shows it as a drill); ``--file`` is ingested with ``ingest --drill``. The gRPC input cannot tell
a drill, so ``--grpc`` needs ``--live``: the responder acts on those alerts as on Falco's.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from responder.client import ClientAuth, ResponderClient
from responder.cluster.kubeconfig import FLAGS
from responder.commands.common import add_responder_options, client_auth, positive_seconds, responder_url
from responder.config import Cluster
from responder.errors import UserError
from simulators.alerts import (
    ALERTS_FOLLOW_RULES,
    RuleSpec,
    ScenarioAlert,
    add_rules_option,
    check_rules_defined,
    chosen_rule_specs,
    rules_took_the_scenarios,
    scenario_alerts,
)
from simulators.falco_grpc_server import FalcoGrpcServer, ServerTLS
from simulators.identity import PodIdentity, forged_identity, parse_pod_ref, read_identity
from simulators.replay import Delivery, post_alerts, publish_alerts, write_alerts
from simulators.scenario import Outcome, Scenario, add_scenarios_dir_option, check_run_id, load_scenarios
from simulators.silenced import judge

DEFAULT_TIMEOUT = 30.0
# The options that apply to one way out only: (dest, flag, the targets they apply to).
TARGET_OPTIONS = (
    ("ca_file", "--ca", ("--to",)),
    ("cert_file", "--cert", ("--to",)),
    ("key_file", "--key", ("--to",)),
    ("token_file", "--token-file", ("--to",)),
    ("grpc_cert", "--grpc-cert", ("--grpc on TCP",)),
    ("grpc_key", "--grpc-key", ("--grpc on TCP",)),
    ("grpc_client_ca", "--grpc-client-ca", ("--grpc on TCP",)),
    ("timeout", "--timeout", ("--to", "--grpc")),
)
# The options only reading the pod uses, which --forge does not do: (dest, flag).
POD_READ_OPTIONS = (("kubeconfig", "--kubeconfig"), ("context", "--context"), ("container", "--container"))


def configure(parser: argparse.ArgumentParser) -> None:
    # SCENARIO is optional to argparse only so that scenarios swallowed by --rules (which takes every
    # word after it) get an error that says so (see alerts.rules_took_the_scenarios).
    parser.usage = (
        "%(prog)s SCENARIO... (--to URL | --grpc ADDRESS | --file PATH) --pod NAMESPACE/NAME\n"
        "       [--container NAME] [--forge] [--live] [--kubeconfig FILE] [--context NAME] [--run-id ID]\n"
        "       [--rules FILE [FILE ...]] [--scenarios-dir DIR] [--timeout SECONDS]\n"
        "       [--grpc-cert FILE --grpc-key FILE --grpc-client-ca FILE]\n"
        "       [--ca CA_FILE] [--cert CERT_FILE --key KEY_FILE] [--token-file TOKEN_FILE]"
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names, or all")
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument(
        "--to", metavar="URL", type=responder_url, help="the responder's HTTP input (POST URL/v1/alerts)"
    )
    out.add_argument(
        "--grpc",
        metavar="ADDRESS",
        help="serve the alerts as Falco's gRPC outputs service on unix:///PATH or HOST:PORT (mutual TLS) "
        "until the responder has collected them",
    )
    out.add_argument("--file", metavar="PATH", help="write Falco JSON lines ('-': stdout)")
    parser.add_argument("--pod", required=True, metavar="NAMESPACE/NAME", help="the pod the alerts are about")
    parser.add_argument(
        "--container", metavar="NAME", help="the container in the pod (default: the first running one)"
    )
    parser.add_argument(
        "--forge", action="store_true", help="do not read the pod: send a random container id"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="send the alerts as Falco's, not as a drill: the responder acts on them (quarantines the pod)"
        " as its policies say; needed for --grpc, which cannot tell a drill",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="kubeconfig to read the pod with (default: in-cluster or ~/.kube/config)",
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context")
    parser.add_argument("--run-id", metavar="ID", help="tag for this run (default: a new random id)")
    add_rules_option(parser, ALERTS_FOLLOW_RULES, after_scenarios=True)
    add_scenarios_dir_option(parser)
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help=f"seconds to wait for delivery, with --to or --grpc (default: {DEFAULT_TIMEOUT:g})",
    )
    grpc_tls = parser.add_argument_group("--grpc on TCP (Falco serves TCP only with mutual TLS)")
    grpc_tls.add_argument("--grpc-cert", metavar="FILE", help="server certificate")
    grpc_tls.add_argument("--grpc-key", metavar="FILE", help="server key")
    grpc_tls.add_argument(
        "--grpc-client-ca", metavar="FILE", help="CA the responder's client certificate must chain to"
    )
    add_responder_options(parser)


def _target(args: argparse.Namespace) -> str:
    if args.to is not None:
        return "--to"
    if args.grpc is not None:
        return "--grpc on a unix socket" if args.grpc.startswith("unix:") else "--grpc on TCP"
    return "--file"


def check_target_options(args: argparse.Namespace) -> None:
    """Refuse an option the chosen way out would silently ignore (``--file`` with ``--ca``)."""
    target = _target(args)
    for dest, flag, targets in TARGET_OPTIONS:
        # "--grpc" covers both of its kinds of address.
        applies = target in targets or (target.startswith("--grpc ") and "--grpc" in targets)
        if getattr(args, dest) is not None and not applies:
            raise UserError(f"{flag} applies to {' and '.join(targets)} only, not to {target}")


def check_forge_options(args: argparse.Namespace) -> None:
    """Refuse an option ``--forge`` would silently ignore: it reads no pod (``--forge --kubeconfig``)."""
    if not args.forge:
        return
    for dest, flag in POD_READ_OPTIONS:
        if getattr(args, dest) is not None:
            raise UserError(f"{flag} applies to reading the pod only, not to --forge")


def check_drill_options(args: argparse.Namespace) -> None:
    """Refuse a way out that cannot carry the drill mark, unless the alerts are meant --live."""
    if args.grpc is not None and not args.live:
        raise UserError(
            "--grpc cannot send a drill (the gRPC input tells no sender from Falco): the responder acts on"
            " these alerts as on Falco's, and quarantines the pod its policies say; add --live to send them"
            " so, or replay --to the HTTP input with the drill token (inputs.http.drill_token)"
        )


def _identity(args: argparse.Namespace) -> PodIdentity:
    namespace, name = parse_pod_ref(args.pod)
    if args.forge:
        return forged_identity(namespace, name)
    from responder.cluster.api import KubeGateway

    # This command has no config file: a kubeconfig problem names the flags.
    gateway = KubeGateway.from_config(Cluster(kubeconfig=args.kubeconfig, context=args.context), FLAGS)
    try:
        return read_identity(gateway, namespace, name, args.container)
    finally:
        gateway.close()


def _specs(
    args: argparse.Namespace, scenarios: list[Scenario], out: TextIO, directory: Path | None = None
) -> Mapping[str, RuleSpec]:
    """The rules the alerts follow: --rules (in load order), else this checkout's pack, which must define
    every rule the scenarios send (a misspelt one in a scenario of ``directory`` is named with its
    file); else (an installed wheel has no pack) a generic output line."""
    specs = chosen_rule_specs(args.rules)
    if specs is None:
        print("note: no rules pack found (use --rules): alerts carry a generic output line", file=out)
        return {}
    check_rules_defined(scenarios, specs, directory)
    return specs


def _grpc_server(args: argparse.Namespace) -> FalcoGrpcServer:
    tls = None
    if not args.grpc.startswith("unix:"):
        if not (args.grpc_cert and args.grpc_key and args.grpc_client_ca):
            raise UserError("--grpc on TCP needs --grpc-cert, --grpc-key and --grpc-client-ca (mutual TLS)")
        tls = ServerTLS(args.grpc_cert, args.grpc_key, args.grpc_client_ca)
    try:
        return FalcoGrpcServer(args.grpc, tls=tls)
    except (ValueError, OSError) as exc:
        raise UserError(f"--grpc {args.grpc}: {exc}") from None


def _deliver(
    args: argparse.Namespace, alerts: list[ScenarioAlert], auth: ClientAuth | None
) -> list[Delivery]:
    timeout = args.timeout if args.timeout is not None else DEFAULT_TIMEOUT
    if args.file is not None:
        return write_alerts(args.file, alerts)
    if args.grpc:
        server = _grpc_server(args)
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            raise UserError(f"cannot serve gRPC on {args.grpc}: {exc}") from None
        try:
            return publish_alerts(server, alerts, timeout)
        finally:
            server.stop(grace=1.0)

    async def post() -> list[Delivery]:
        async with ResponderClient(args.to, auth, timeout_seconds=timeout, flag="--to") as client:
            return await post_alerts(client, alerts, drill=not args.live)

    return asyncio.run(post())


def build_alerts(
    scenarios: list[Scenario], identity: PodIdentity, run_id: str, specs: Mapping[str, RuleSpec]
) -> list[ScenarioAlert]:
    return [alert for scenario in scenarios for alert in scenario_alerts(scenario, identity, run_id, specs)]


def run(args: argparse.Namespace) -> int:
    out = sys.stderr if args.file == "-" else sys.stdout
    if not args.scenarios:
        raise UserError(
            rules_took_the_scenarios("replay", args.rules) or "name at least one scenario (or all)"
        )
    check_target_options(args)
    check_forge_options(args)
    check_drill_options(args)
    # The responder's credentials are read (and checked) before the pod is.
    auth = client_auth(args) if args.to is not None else None
    scenario_set = load_scenarios(args.scenarios_dir)
    scenarios = scenario_set.select(args.scenarios)
    run_id = check_run_id(args.run_id) if args.run_id is not None else secrets.token_hex(6)
    # Before the pod is read: a --rules problem, or a rule no pack defines, is found first.
    specs = _specs(args, scenarios, out, scenario_set.directory)
    identity = _identity(args)
    alerts = build_alerts(scenarios, identity, run_id, specs)
    forged = " (FORGED: random container id)" if identity.forged else ""
    sent_as = " as Falco's (--live: the responder acts on them)" if args.live else " as a drill"
    print(
        f"run id {run_id}: {len(alerts)} alert(s) for {identity.ref} on {identity.hostname}{forged}{sent_as}",
        file=out,
    )
    for scenario in scenarios:
        if not scenario.alerts:
            # Its silence after a replay would prove nothing: no serving traffic ran.
            print(
                f"  {scenario.name}: control, nothing to send (a replay runs no serving traffic, so it"
                f" proves no control: run it live, serving-guard simulate {scenario.name})",
                file=out,
            )
    for line in silenced_notes(alerts, specs):
        print(line, file=out)
    for item in alerts:
        if not item.carries_step:
            print(
                f"  note: {item.scenario} alert {item.step} ({item.rule}) carries {{marker}} in no field"
                " its rule outputs: it cannot be told from the scenario's other alerts, so verify does not"
                " require it",
                file=out,
            )
    deliveries = _deliver(args, alerts, auth) if alerts else []
    for delivery in deliveries:
        state = "sent  " if delivery.ok else "FAILED"
        alert_id = f" alert_id={delivery.alert_id}" if delivery.alert_id else ""
        print(
            f"  {state} {delivery.alert.scenario} [{delivery.alert.step}]: {delivery.alert.rule}:"
            f" {delivery.detail}{alert_id}",
            file=out,
        )
    if deliveries and not any(d.ok for d in deliveries):
        print("nothing was delivered: fix what the FAILED lines say, then replay again", file=out)
        return 1
    for line in drill_notes(args, deliveries):
        print(line, file=out)
    if not deliveries:
        print("nothing to verify: a control sends nothing (run it live: serving-guard simulate)", file=out)
        return 0
    trail = verify_trail_flags(args)
    if identity.forged:
        delivered = {d.alert.scenario for d in deliveries if d.ok}
        trail += "".join(f" --expect {s.name}=unverified" for s in scenarios if s.name in delivered)
    # --file's alerts are a drill when ingested with --drill, as replay says to.
    as_drill = args.file is not None and not args.live
    predicted = [] if identity.forged else drill_predictions(scenarios, deliveries, assume_drill=as_drill)
    trail += "".join(f" --expect {name}=dry_run" for name in predicted)
    print(f"check the responder: {verify_command(scenarios, run_id, deliveries, trail)}", file=out)
    # The scenarios' outcomes are the reference policy's (review-operator L3: a notify-only policy
    # failed the printed verify as if the responder were wrong).
    print(
        "  (it expects what simulators/reference_policy.yaml does with each scenario: where your"
        " policies do otherwise, say so with --expect SCENARIO=OUTCOME)",
        file=out,
    )
    if predicted:
        print(
            "  (a drill changes no pod unless the responder enforces drills, guardrails.enforce_drills:"
            " then leave the --expect ...=dry_run out)",
            file=out,
        )
    return 0 if all(d.ok for d in deliveries) else 1


def silenced_notes(alerts: list[ScenarioAlert], specs: Mapping[str, RuleSpec]) -> list[str]:
    """A note for each alert an exception of its rule, as the rules files load, would keep Falco from
    sending (a tuning that blinds the rule where the scenario runs), or may (fields the alert does not
    carry): replayed all the same."""
    notes = []
    for item in alerts:
        spec = specs.get(item.rule)
        fields = item.alert.get("output_fields")
        if spec is None or not isinstance(fields, dict):
            continue
        verdict = judge(fields, spec.exceptions)
        about = f"  note: {item.scenario} alert {item.step} ({item.rule}):"
        if verdict.silenced is not None:
            notes.append(
                f"{about} Falco would not send it: the {verdict.silenced.text()}; sent all the same (a"
                " replay proves the responder, not detection)"
            )
        notes.extend(
            f"{about} Falco may not send it: the {untold.text()}; sent all the same (check it live:"
            f" serving-guard simulate {item.scenario})"
            for untold in verdict.untold
        )
    return notes


def drill_notes(args: argparse.Namespace, deliveries: list[Delivery]) -> list[str]:
    """What became of the drill mark: --file's alerts are a drill only if ingested with --drill; a
    responder that took --to's alerts without saying they were drills acted on them as Falco's."""
    if args.live:
        if any(d.ok and d.drill for d in deliveries):
            return [
                "note: the responder took them as a drill all the same (sent with its drill token, --live"
                " or not): decided in dry-run unless it enforces drills; send them with a sender's"
                " credential to have them acted on as Falco's"
            ]
        return []
    if args.file is not None:
        where = "-" if args.file == "-" else shlex.quote(args.file)
        return [
            f"ingest them as a drill: serving-guard ingest {where} --drill --config CONFIG"
            " (without --drill they are acted on as Falco's)"
        ]
    if args.to is None:
        return []
    live = [d for d in deliveries if d.ok and not d.drill]
    if not live:
        return [
            "the responder took them as a drill: in incidents of their own, decided in dry-run unless it"
            " enforces drills (guardrails.enforce_drills), shown as DRILL in Slack and the audit trail"
        ]
    return [
        f"WARNING: the responder did not say it took {len(live)} of them as a drill (a version before"
        " drills): it acted on them as on Falco's alerts"
    ]


# What a drill in dry-run predicts instead of doing (verify's dry_run): the outcomes that change the pod.
_CHANGES_POD = (Outcome.QUARANTINED, Outcome.LEAKY, Outcome.ANNOTATED, Outcome.BLOCKED)


def drill_predictions(
    scenarios: list[Scenario], deliveries: list[Delivery], *, assume_drill: bool = False
) -> list[str]:
    """The scenarios whose action a drill only predicts: delivered, every delivered alert taken as a
    drill (``assume_drill``: to be, ingested with --drill), expected to change the pod."""
    taken = [d for d in deliveries if d.ok]
    if not taken or not (assume_drill or all(d.drill for d in taken)):
        return []
    delivered = {d.alert.scenario for d in taken}
    return [s.name for s in scenarios if s.name in delivered and s.expect.outcome in _CHANGES_POD]


def verify_trail_flags(args: argparse.Namespace) -> str:
    """Where the printed verify reads the trail: the responder replayed to (``--to``, its TLS CA too;
    the trail is read with the audit token, which no sender's token is), else the journal of the
    responder that collects (``--grpc``) or ingests (``--file``) the alerts: it has no HTTP input to
    ask, or none these alerts went through."""
    pod = f" --pod {args.pod}"
    if args.to is None:
        return pod + " --config CONFIG"
    ca = f" --ca {shlex.quote(args.ca_file)}" if args.ca_file is not None else ""
    return f"{pod} --responder {args.to}{ca} --token-file AUDIT_TOKEN_FILE"


def verify_command(scenarios: list[Scenario], run_id: str, deliveries: list[Delivery], trail: str) -> str:
    """The verify command for a replay: every alert delivered (and carrying its step's marker) is a
    step verify must find; ``trail`` is where verify reads the trail (verify_trail_flags)."""
    # Not a control (nothing replayed proves it), nor a scenario none of whose alerts got through.
    delivered = {d.alert.scenario for d in deliveries if d.ok}
    names = " ".join(s.name for s in scenarios if s.name in delivered)
    steps = ""
    for scenario in scenarios:
        numbers = [
            d.alert.step
            for d in deliveries
            if d.ok and d.alert.scenario == scenario.name and d.alert.carries_step
        ]
        if numbers:
            steps += f" --steps {scenario.name}={','.join(map(str, numbers))}"
    return f"serving-guard verify {names} --run-id {run_id}{steps}{trail}"
