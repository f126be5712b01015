"""The separate processes a simulated attack runs as: ``python -m simulators.child OP ARGS... MARKER``.

Falco attributes an event to the process that made it, so every file access, connection or
program start of a scenario happens in a process of its own whose command line ends with the
run's marker (``sg-run=<run id>.<scenario>``). The caller (:mod:`simulators.live`) decides what
is safe to do; this module only does it. Standard library only: it must start fast anywhere.

Exit status 0 on success, 2 on bad usage, 1 (with one line on stderr) when the operation failed.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

CONNECT_TIMEOUT_SECONDS = 2.0
SERVE_LIFETIME_SECONDS = 30.0
DUMMY = b"serving-guard dummy model\n"
EXIT_NOT_ACCEPTED = 3  # connect: attempted, but refused or timed out
EXIT_CANNOT_EXECUTE = 126  # run: the program could not be executed (as a shell reports it)


def _read(path: str, marker: str) -> None:
    with open(path, "rb") as handle:
        handle.read()


def _write(path: str, marker: str) -> None:
    # O_EXCL: never overwrite a file this run did not create.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(DUMMY + marker.encode() + b"\n")


def _append(path: str, marker: str) -> None:
    with open(path, "ab") as handle:
        handle.write(b"serving-guard tampered\n")


def _rename(source: str, target: str, marker: str) -> None:
    if os.path.lexists(target):
        raise FileExistsError(f"{target} exists")
    os.rename(source, target)


def _chmod(path: str, mode: str, marker: str) -> None:
    os.chmod(path, int(mode, 8))


def _symlink(target: str, link: str, marker: str) -> None:
    os.symlink(target, link)


def _unlink(path: str, marker: str) -> None:
    os.unlink(path)


class NotAccepted(Exception):
    """The connection attempt was made (the event Falco sees) but the far end did not take it."""


def _connect(protocol: str, host: str, port: str, marker: str) -> None:
    payload = marker.encode()
    if protocol == "tcp":
        try:
            conn = socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_SECONDS)
        except (TimeoutError, ConnectionRefusedError) as exc:
            raise NotAccepted(str(exc) or type(exc).__name__) from None
        with conn:
            conn.sendall(payload)
        return
    if protocol == "udp":
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, (host, int(port)))
        return
    raise ValueError(f"protocol must be tcp or udp, got {protocol!r}")


def _run(*argv: str) -> int:
    # This process stays the parent, so the program's proc.pcmdline carries the marker; its file
    # descriptors are inherited (a memfd passed as /proc/self/fd/N).
    try:
        completed = subprocess.run(argv, close_fds=False, check=False, timeout=30)
    except PermissionError as exc:
        print(f"run: cannot execute {argv[0]}: {exc.strerror}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 1
    return completed.returncode


def _serve(model: str, marker: str) -> None:
    with open(model, "rb") as handle:
        weights = handle.read()

    class Predict(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f'{{"model_bytes": {len(weights)}, "prediction": 0}}\n'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Predict)
    print(server.server_address[1], flush=True)

    # Ends when the parent closes our stdin, or after a bounded lifetime whatever happens.
    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    lifetime = threading.Timer(SERVE_LIFETIME_SECONDS, server.shutdown)
    lifetime.daemon = True
    lifetime.start()
    server.serve_forever(poll_interval=0.05)
    server.server_close()


OPERATIONS: dict[str, tuple[int, Callable[..., object]]] = {
    "read": (1, _read),
    "write": (1, _write),
    "append": (1, _append),
    "rename": (2, _rename),
    "chmod": (2, _chmod),
    "symlink": (2, _symlink),
    "unlink": (1, _unlink),
    "connect": (3, _connect),
    "serve": (1, _serve),
}


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m simulators.child OP ARGS... MARKER", file=sys.stderr)
        return 2
    operation, args, marker = argv[0], list(argv[1:-1]), argv[-1]  # the last argument is the marker
    if operation == "run":
        if not args:
            print("run: name the program", file=sys.stderr)
            return 2
        return _run(*args)
    if operation not in OPERATIONS:
        print(f"unknown operation {operation!r}", file=sys.stderr)
        return 2
    count, function = OPERATIONS[operation]
    if len(args) != count:
        print(f"{operation}: expected {count} argument(s) and the marker, got {len(args)}", file=sys.stderr)
        return 2
    try:
        function(*args, marker=marker)
    except NotAccepted as exc:
        print(f"{operation}: not accepted: {exc}", file=sys.stderr)
        return EXIT_NOT_ACCEPTED
    except (OSError, ValueError) as exc:
        print(f"{operation}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
