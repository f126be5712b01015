"""The baseline servers: they only read the body, parse the JSON and answer 204.

``python -m bench.baseline [--stack aiohttp|input]`` prints ``listening PORT`` and serves on
127.0.0.1 until SIGTERM.

- ``aiohttp`` (the reference the targets are measured against): a plain aiohttp server (AppRunner,
  no access log, the same body limit) -- what a Python service that "only parses and answers"
  usually is.
- ``input``: the responder's own HTTP server (``responder.ingest.httpserver``) with a route that
  only parses. The responder's rate over this one is what its own work (validation, journal,
  dedupe, decision) costs on top of its HTTP layer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal

from aiohttp import web

from responder.ingest.httpserver import HttpServer, Request, Response, Route

MAX_BODY_BYTES = 65536


async def handle(request: web.Request) -> web.Response:
    json.loads(await request.read())
    return web.Response(status=204)


async def handle_input(request: Request) -> Response:
    json.loads(request.body)
    return Response(204)


async def serve(stack: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    if stack == "input":
        server = HttpServer([Route("POST", "/v1/alerts", handle_input, max_body_bytes=MAX_BODY_BYTES)])
        _, port = await server.start("127.0.0.1", 0)
        print(f"listening {port}", flush=True)
        await stop.wait()
        await server.stop()
        return
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/v1/alerts", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"listening {runner.addresses[0][1]}", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--stack", choices=("aiohttp", "input"), default="aiohttp")
    asyncio.run(serve(parser.parse_args().stack))
