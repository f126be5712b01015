"""`serving-guard serve --config FILE`: run the responder until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from responder.cluster.api import KubeGateway
from responder.config import Config, load_config
from responder.logs import setup_logging
from responder.service import Responder


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
    await build_responder(config).run_until(stop)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.logging.level, config.logging.format)
    asyncio.run(serve(config))
    return 0
