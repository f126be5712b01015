"""What a valid config means for `serve`: why it would refuse to start on it, and what it does
that nobody is told of. Pure: no I/O. `serve` refuses and warns with these words, and `config
check` says them before a deploy does."""

from __future__ import annotations

from responder.config import ActionName, Config, SlackMode

# The actions that cut a pod's traffic: the ones someone must hear of.
_CUTTING = (ActionName.QUARANTINE, ActionName.BLOCK_DESTINATION)


def serve_refusal(config: Config) -> str | None:
    """Why `serve` refuses ``config`` (None: it starts). Without an input it would run, healthy,
    and never receive an alert; `ingest` needs none."""
    inputs = config.inputs
    if inputs.http.enabled or inputs.grpc.enabled:
        return None
    return (
        "no input is enabled: configure inputs.http (Falco's http_output, the Falcosidekick webhook)"
        " or inputs.grpc (Falco <= 0.43)"
    )


def policies_cutting_pods(config: Config) -> list[str]:
    """The policies that quarantine or block pods for real (not in dry-run)."""
    if config.guardrails.dry_run:
        return []
    return [
        policy.name
        for policy in config.policies
        if not policy.dry_run and any(action in _CUTTING for action in policy.actions)
    ]


def unannounced_cuts(config: Config) -> str | None:
    """A warning when pods are cut off and Slack, the only place a person hears of it, is off."""
    if config.slack.mode is not SlackMode.DISABLED:
        return None
    cutting = policies_cutting_pods(config)
    if not cutting:
        return None
    return (
        f"slack.mode is disabled, yet pods are quarantined or blocked (policies: {', '.join(cutting)}):"
        " nobody is told when a pod is cut off (only the journal records it: serving-guard audit);"
        " set slack.mode to bot or webhook"
    )
