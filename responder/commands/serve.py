"""`serving-guard serve --config FILE`: run the responder until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable

from responder.cluster.api import KubeGateway
from responder.config import Config, load_config
from responder.errors import UserError
from responder.logs import setup_logging
from responder.memory_budget import connections_memory_warning, container_memory_limit
from responder.policy_review import unreachable_policies
from responder.serve_review import serve_refusal, unannounced_cuts
from responder.service import Responder
from responder.validation_problems import dotted_path

log = logging.getLogger("serving_guard.serve")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the responder's YAML config")


def build_responder(config: Config, config_path: str | None = None) -> Responder:
    """The responder for ``config``; ``config_path``, the file it came from, goes into the commands
    Slack gives for acting by hand (they need the same config)."""
    from responder.notify.slack import SlackDelivery

    gateway = KubeGateway.from_config(config.cluster)
    return Responder(
        config,
        gateway,
        delivery=SlackDelivery.from_config(config.slack),
        config_path=os.path.abspath(config_path) if config_path else None,
    )


async def serve(config: Config, config_path: str | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(signum: int) -> None:
        # Logged, as the stop that follows: a clean stop is not to be taken for a SIGKILL.
        log.info("responder stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stopping, signum)
    await build_responder(config, config_path).run_until(stop, on_started=tune_collector_after_start)
    log.info("responder stopped")


# Container objects allocated (net) between collections of the youngest generation; Python's
# default is 700.
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_collector_after_start() -> None:
    """Once the responder is up, two changes to the cyclic garbage collector (bench/README.md,
    round 5), measured on the event loop's CPU per alert under a storm:
    - what start-up built (modules, the Kubernetes client's models: ~74,000 objects) lives as long
      as the process, and every full collection walked it all: frozen out of its reach (~10 µs);
    - with the default threshold the youngest generation was collected every ~50 alerts, each time
      walking the objects of every alert in flight: its threshold is raised from 700 (~6 µs).
    Objects freed by reference counting (nearly all of an alert's) are unaffected."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
    log.info(
        "garbage collector tuned",
        extra={"frozen_objects": gc.get_freeze_count(), "thresholds": list(gc.get_threshold())},
    )


def event_loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop ``server.event_loop`` names."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        raise UserError(
            "server.event_loop: uvloop is not installed here (install it, or set event_loop: asyncio)"
        ) from None
    return uvloop.new_event_loop


def warn_if_connections_exceed_memory(config: Config, limit_bytes: int | None = None) -> None:
    """Say at start-up when the HTTP input's connections, at their cap, may not fit the
    container's memory limit (``limit_bytes``; None: read from this process's cgroup)."""
    http = config.inputs.http
    if not http.enabled:
        return
    limit = limit_bytes if limit_bytes is not None else container_memory_limit()
    if limit is None:
        return
    warning = connections_memory_warning(
        config.server.event_loop,
        http.tls is not None,
        http.max_connections,
        http.max_body_bytes,
        limit,
        config.journal.max_pending_bytes,
        config.dedupe.max_open_bytes,
    )
    if warning is not None:
        log.warning(warning)


def warn_of_unreachable_policies(config: Config) -> None:
    """A policy an earlier one shadows is a config bug the responder can run with, loudly."""
    for finding in unreachable_policies(config):
        log.warning(
            f"{dotted_path(finding.path)}: {finding.message} (serving-guard config check names the line)"
        )


def warn_of_unannounced_cuts(config: Config) -> None:
    """Pods cut off with Slack disabled: nobody would hear of it but from the journal."""
    warning = unannounced_cuts(config)
    if warning is not None:
        log.warning(warning)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    refusal = serve_refusal(config)
    if refusal is not None:
        raise UserError(
            f"{args.config}: {refusal}; `serving-guard ingest` reads alerts from a file without one"
        )
    setup_logging(config.logging.level, config.logging.format)
    warn_if_connections_exceed_memory(config)
    warn_of_unreachable_policies(config)
    warn_of_unannounced_cuts(config)
    with asyncio.Runner(loop_factory=event_loop_factory(config.server.event_loop)) as runner:
        log.info("starting", extra={"event_loop": config.server.event_loop})
        runner.run(serve(config, args.config))
    return 0
