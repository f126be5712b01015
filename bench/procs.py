"""The processes a benchmark run drives: the fixture (emulator, Slack sink, Falco gRPC server,
prober), the responder (``python -m responder serve``, as in production), the baseline server,
and the load generator. Each runs in its own interpreter so no GIL is shared with the server
under test; every one is stopped by this module, even when a scenario fails."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
TOKEN = "bench-token-0123456789"  # a loopback-only benchmark token


def _env(root: Path = ROOT) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(root)}


def http_json(url: str, payload: Any | None = None, timeout: float = 120.0) -> Any:
    """GET (payload None) or POST JSON to a loopback control endpoint."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # loopback only
        return json.loads(response.read())


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def _started(workdir: Path, name: str, *args: str) -> Iterator[bytes]:
    """Run ``python -m ARGS`` (stderr to ``NAME.log``) until the block ends; yield its first stdout line."""
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=log, env=_env(), cwd=ROOT
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{name} did not start; see {workdir / f'{name}.log'}")
        yield line
    finally:
        _stop(process)
        log.close()


@contextlib.contextmanager
def fixture(workdir: Path) -> Iterator[dict[str, Any]]:
    """Start ``bench.fixture``; yield its ready line (URLs and seeded pods)."""
    with _started(workdir, "fixture", "bench.fixture", str(workdir)) as line:
        yield json.loads(line)


@contextlib.contextmanager
def baseline_server(workdir: Path, stack: str = "aiohttp") -> Iterator[int]:
    with _started(workdir, "baseline", "bench.baseline", "--stack", stack) as line:
        words = line.decode().split()
        if words[:1] != ["listening"]:
            raise RuntimeError(f"the baseline server did not start; see {workdir / 'baseline.log'}")
        yield int(words[1])


def free_port() -> int:
    """A loopback port free now, taken from below the kernel's ephemeral range: a port the kernel
    hands out (bind to 0) can be taken in the meantime by one of the many outgoing connections a
    run makes (the load generator's, the fixture's), and the responder then fails to listen."""
    import random
    import socket

    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low = 10_000 if ephemeral_low > 12_000 else 1_024
    candidates = range(low, max(ephemeral_low, low + 1))
    for port in random.sample(candidates, k=min(200, len(candidates))):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


@dataclass
class Responder:
    """One responder process with a fresh journal, configured for a scenario."""

    workdir: Path
    world: dict[str, Any]
    name: str
    grpc: bool = False
    commit_interval_ms: float | None = None
    synchronous: str | None = None  # journal.synchronous; None: the default (full)
    writer: str | None = None  # journal.writer; None: the default (process)
    # The checkout whose responder runs (bench.ab compares commits through worktrees of them).
    root: Path = ROOT
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # Record the responder with py-spy (collapsed stacks, one line per stack) while it runs.
    profile: bool = False
    profiler: subprocess.Popen[bytes] | None = None
    # Run it under bench.stages' probes, which write their events to ``stages_file`` when it stops.
    stages: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def journal(self) -> Path:
        return self.workdir / f"{self.name}-journal.db"

    @property
    def stages_file(self) -> Path:
        return self.workdir / f"{self.name}-stages.json"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def config(self) -> dict[str, Any]:
        kubeconfig = self.workdir / "kubeconfig.json"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "bench", "cluster": {"server": self.world["kube"]}}],
                    "users": [{"name": "bench", "user": {"token": "bench"}}],
                    "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
                    "current-context": "bench",
                }
            )
        )
        (self.workdir / "token").write_text(TOKEN)
        (self.workdir / "slack-token").write_text("xoxb-bench")
        journal: dict[str, Any] = {"path": str(self.journal)}
        if self.commit_interval_ms is not None:
            journal["commit_interval_ms"] = self.commit_interval_ms
        if self.synchronous is not None:
            journal["synchronous"] = self.synchronous
        if self.writer is not None:
            journal["writer"] = self.writer
        return {
            "inputs": {
                "http": {
                    "listen": f"127.0.0.1:{self.http_port}",
                    "token": {"file": str(self.workdir / "token")},
                },
                "grpc": {"enabled": self.grpc, "address": self.world["grpc"], "poll_interval_seconds": 0.1},
            },
            "server": {"metrics_listen": f"127.0.0.1:{self.metrics_port}"},
            "cluster": {"kubeconfig": str(kubeconfig)},
            "guardrails": {"max_quarantines": {"count": 10000, "window_seconds": 300}},
            "policies": [
                {
                    "name": "bench-isolate",
                    "match": {"rules": ["Bench shell *"], "min_priority": "warning"},
                    "actions": ["notify", "quarantine"],
                }
            ],
            "slack": {
                "mode": "bot",
                "token": {"file": str(self.workdir / "slack-token")},
                "default_channel": f"#{self.name}",
                "base_url": self.world["slack"],
            },
            "journal": journal,
            "logging": {"level": "info", "format": "json"},
        }

    def start(self) -> Responder:
        path = self.workdir / f"{self.name}-config.yaml"
        path.write_text(yaml.safe_dump(self.config()))
        with (self.workdir / f"{self.name}-responder.log").open("ab") as log:
            command = ["responder", "serve", "--config", str(path)]
            if self.stages:
                command = ["bench.stages", "serve", "--config", str(path), "--out", str(self.stages_file)]
            self.process = subprocess.Popen(
                [sys.executable, "-m", *command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(self.root),
                cwd=self.root,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the responder exited; see {self.workdir / f'{self.name}-responder.log'}")
            with contextlib.suppress(OSError, ValueError):
                if http_json(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2)["status"] == "ok":
                    if self.profile:
                        self._start_profiler()
                    return self
            time.sleep(0.1)
        raise RuntimeError("the responder did not become healthy")

    def _start_profiler(self) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.profiler = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--threads",
                "--rate",
                "200",
                "--output",
                str(self.workdir / f"{self.name}-profile.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.profiler.wait(timeout=30)
        if self.process is not None:
            _stop(self.process)

    def __enter__(self) -> Responder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observing it ---------------------------------------------------------------------------

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over the series whose labels include ``labels``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")) and all(term in line for term in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def unfinished(self) -> int:
        return int(
            self.query(
                "SELECT (SELECT COUNT(*) FROM alerts WHERE state = 'pending')"
                " + (SELECT COUNT(*) FROM notifications WHERE state IN ('pending', 'sending')"
                "    AND next_attempt_ns <= ?)",
                (time.time_ns(),),
            )[0][0]
        )

    def wait_settled(self, timeout: float) -> float | None:
        """Wait until every alert is final and no notification is due; the time it happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.unfinished() == 0:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def rss(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the responder and its journal writer process, summed, in
        bytes: a container's memory limit counts both. (The sum of two peaks bounds their joint
        peak from above.)"""
        values = {"VmRSS": 0, "VmHWM": 0}
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):  # a child that just exited
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in values:
                        values[key] += int(value.split()[0]) * 1024
        return values


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it. Each thread's ``children`` file lists the
    processes it started: a few reads per sample, not a scan of all of /proc while the responder
    is being measured."""
    tree, frontier = [root], [root]
    while frontier:
        found: list[int] = []
        for pid in frontier:
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                with contextlib.suppress(OSError):  # a thread or process that just exited
                    found.extend(int(child) for child in children.read_text().split())
        tree.extend(found)
        frontier = found
    return tree


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread, until stopped."""

    def __init__(self, responder: Responder, interval: float = 0.1) -> None:
        self._responder = responder
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.samples.append((time.monotonic(), self._responder.rss()["VmRSS"]))
            self._stop.wait(self._interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)


@dataclass
class LoadSpec:
    port: int
    pods: list[dict[str, Any]]
    rules: list[str]
    connections: int = 16
    total: int | None = None
    seconds: float | None = None
    warmup_seconds: float = 0.0
    ids_file: str | None = None
    token: str | None = TOKEN
    path: str = "/v1/alerts"
    host: str = "127.0.0.1"
    retry_overloaded: bool = True
    rate: float | None = None
    base_seconds: int = field(default_factory=lambda: int(time.time()))


class LoadGenerator:
    """``python -m bench.loadgen`` in its own process; ``result()`` waits for its JSON report."""

    def __init__(self, workdir: Path, name: str, spec: LoadSpec) -> None:
        spec_file = workdir / f"{name}-load.json"
        spec_file.write_text(json.dumps(spec.__dict__))
        self._log = (workdir / f"{name}-load.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", str(spec_file)],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=_env(),
            cwd=ROOT,
        )
        self._name = name
        self._workdir = workdir

    def result(self, timeout: float = 600.0) -> dict[str, Any]:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise RuntimeError(f"load generator {self._name} did not finish in {timeout}s") from None
        finally:
            self._log.close()
        if self.process.returncode != 0:
            raise RuntimeError(
                f"load generator {self._name} failed; see {self._workdir}/{self._name}-load.log"
            )
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    def stop(self) -> None:
        _stop(self.process)
