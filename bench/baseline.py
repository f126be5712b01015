"""The baseline server: the same aiohttp stack as the responder's HTTP input (AppRunner, no access
log, same body limit) that only reads the body, parses the JSON and answers 204. The ratio of
the responder's rate to this one is what the responder's own work costs.

``python -m bench.baseline`` prints ``listening PORT`` and serves on 127.0.0.1 until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal

from aiohttp import web

MAX_BODY_BYTES = 65536


async def handle(request: web.Request) -> web.Response:
    json.loads(await request.read())
    return web.Response(status=204)


async def serve() -> None:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/alerts", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"listening {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
