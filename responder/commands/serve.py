"""`serving-guard serve --config FILE`: run the responder until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable

from responder.cluster.api import KubeGateway
from responder.config import Config, load_config
from responder.errors import UserError
from responder.logs import setup_logging
from responder.service import Responder

log = logging.getLogger("serving_guard.serve")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="the responder's YAML config")


def build_responder(config: Config) -> Responder:
    from responder.notify.slack import SlackDelivery

    gateway = KubeGateway.from_config(config.cluster)
    return Responder(config, gateway, delivery=SlackDelivery.from_config(config.slack))


async def serve(config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await build_responder(config).run_until(stop, on_started=freeze_startup_heap)


def freeze_startup_heap() -> None:
    """Take what start-up built out of the cyclic collector's reach: modules, the Kubernetes
    client's models and the like (about 74,000 objects) live as long as the process, and every full
    collection walked them all. Under a storm that cost each alert ~10 µs of the event loop
    (bench/README.md, round 5). Objects made later are collected as before."""
    gc.collect()
    gc.freeze()
    log.info("start-up heap frozen", extra={"objects": gc.get_freeze_count()})


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


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.logging.level, config.logging.format)
    with asyncio.Runner(loop_factory=event_loop_factory(config.server.event_loop)) as runner:
        log.info("starting", extra={"event_loop": config.server.event_loop})
        runner.run(serve(config))
    return 0
