"""One Kubernetes call is one retry loop, KubeGateway's, within one budget: urllib3 retries
nothing inside an attempt (one connection per attempt to an API server that never answers), a
Retry-After is waited for but capped and never past the budget, a 429 or 503 keeps its status,
and a token file the client cannot read again is a retryable error like a transport one. Against
real loopback servers."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.config import incluster_config

from responder.cluster import api
from responder.cluster.api import KubeError, KubeGateway, ServiceAccountFiles
from responder.config import Cluster, Retry
from tests.helpers import refusing_port
from tests.responder.test_in_cluster_client import SHIFTED_MODULE, ShiftedDatetime

# Room over a budget for a loaded machine: the bounds below are on hangs, not on timings.
SLACK_SECONDS = 2.0


def budget_of(retry: Retry, timeout_seconds: float) -> float:
    """A call's budget as documented: every attempt's timeout, and every backoff at its longest
    (doubling from the first, capped, 20% of jitter)."""
    backoffs = [
        min(retry.initial_backoff_seconds * 2.0**n, retry.max_backoff_seconds) * 1.2
        for n in range(retry.attempts - 1)
    ]
    return retry.attempts * timeout_seconds + sum(backoffs)


class SilentServer:
    """Accepts connections and never answers (a hung API server, a partition behind a load
    balancer): counts the connections made to it, and how many were open at once."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        self.open = 0
        self.most_open = 0
        self._lock = threading.Lock()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            with self._lock:
                self._held.append(conn)
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._until_closed, args=(conn,), daemon=True).start()

    def _until_closed(self, conn: socket.socket) -> None:
        """Reads (and ignores) the request until the client hangs up."""
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        with self._lock:
            self.open -= 1

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()


Answer = tuple[int, dict[str, str]]
OK: Answer = (200, {})


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers each request with the server's next scripted (status, headers)."""

    server: ScriptedServer

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        status, headers = self.server.next_answer()
        body = json.dumps({"message": "busy"} if status != 200 else {"metadata": {"name": "p"}}).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_PATCH = _answer


class ScriptedServer(http.server.ThreadingHTTPServer):
    """Answers the requests it gets with ``script`` in turn, then with ``then``; counts them."""

    daemon_threads = True

    def __init__(self, script: list[Answer], then: Answer) -> None:
        super().__init__(("127.0.0.1", 0), Answers)
        self.port = int(self.server_address[1])
        self.script = list(script)
        self.then = then
        self.requests = 0
        self._lock = threading.Lock()

    def next_answer(self) -> Answer:
        with self._lock:
            self.requests += 1
            return self.script.pop(0) if self.script else self.then


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@contextlib.contextmanager
def scripted(script: list[Answer], then: Answer = OK) -> Iterator[ScriptedServer]:
    server = ScriptedServer(script, then)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig_for(tmp_path: Path, port: int) -> str:
    path = tmp_path / "kubeconfig.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return str(path)


def configured(tmp_path: Path, port: int, retry: Retry, timeout_seconds: float) -> KubeGateway:
    """A gateway made as the responder makes it (from the config, through a kubeconfig)."""
    cluster = Cluster(
        kubeconfig=kubeconfig_for(tmp_path, port), retry=retry, request_timeout_seconds=timeout_seconds
    )
    return KubeGateway.from_config(cluster)


class FakeTime:
    """The gateway's clock, moved only by its sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def waits_recorded(port: int, retry: Retry, timeout_seconds: float) -> tuple[KubeGateway, FakeTime]:
    """A gateway whose waits are recorded and pass on the test's clock, not slept."""
    configuration = k8s_client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    now = FakeTime()
    gateway = KubeGateway(
        api.api_client_of(configuration),
        retry=retry,
        timeout_seconds=timeout_seconds,
        sleep=now.sleep,
        clock=now,
    )
    return gateway, now


def ended_within(seconds: float, call: Callable[[], Any]) -> BaseException | None:
    """Runs ``call`` on a thread and waits at most ``seconds``; what it raised (None: it returned).
    A call still running then fails the test (its thread is left behind, a daemon)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"the call still ran after {seconds:.1f} s"
    return outcome[0]


def test_an_api_server_that_never_answers_gets_one_connection_per_attempt_and_the_call_ends_in_budget(
    silent: SilentServer, tmp_path: Path
) -> None:
    retry = Retry(attempts=3, initial_backoff_seconds=0.05)
    gateway = configured(tmp_path, silent.port, retry, timeout_seconds=0.5)
    budget = budget_of(retry, 0.5)
    error = ended_within(budget + SLACK_SECONDS, lambda: gateway.get_pod("ns", "p"))
    assert isinstance(error, KubeError), error
    assert error.status is None and error.retryable
    assert "timed out" in error.reason
    # urllib3's default Retry(3) made four connections per attempt, each with the whole timeout.
    assert silent.accepted == retry.attempts


def test_a_write_to_an_api_server_that_never_answers_is_sent_once_per_attempt(
    silent: SilentServer, tmp_path: Path
) -> None:
    retry = Retry(attempts=2, initial_backoff_seconds=0.05)
    gateway = configured(tmp_path, silent.port, retry, timeout_seconds=0.5)
    error = ended_within(
        budget_of(retry, 0.5) + SLACK_SECONDS,
        lambda: gateway.patch_pod("ns", "p", {"metadata": {"labels": {"a": "b"}}}),
    )
    assert isinstance(error, KubeError) and error.status is None
    assert silent.accepted == retry.attempts


def test_a_refused_connection_is_one_try_per_attempt(tmp_path: Path) -> None:
    with refusing_port() as port:
        gateway = configured(tmp_path, port, Retry(attempts=1), timeout_seconds=5.0)
        error = ended_within(SLACK_SECONDS, lambda: gateway.get_pod("ns", "p"))
    assert isinstance(error, KubeError) and error.status is None and error.retryable
    # Raised as it came, not wrapped in urllib3's "Max retries exceeded".
    assert "NewConnectionError" in error.reason and "Max retries" not in error.reason
    # In words first (Slack shows it; review-oncall 7: urllib3's repr, host tuple and errno), its class after.
    assert error.reason == "cannot connect: connection refused (NewConnectionError)"


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_answer_keeps_its_status_and_is_asked_once_per_attempt(tmp_path: Path, status: int) -> None:
    with scripted([], then=(status, {"Retry-After": "1"})) as server:
        gateway = configured(tmp_path, server.port, Retry(attempts=1), timeout_seconds=5.0)
        error = ended_within(SLACK_SECONDS, lambda: gateway.get_pod("ns", "p"))
    assert isinstance(error, KubeError), error
    assert error.status == status and error.retryable and error.retry_after == 1.0
    assert server.requests == 1


def test_a_retry_after_is_waited_for_then_the_call_goes_on(tmp_path: Path) -> None:
    with scripted([(429, {"Retry-After": "1"})]) as server:
        gateway = configured(tmp_path, server.port, Retry(attempts=2), timeout_seconds=5.0)
        started = time.monotonic()
        assert gateway.get_pod("ns", "p") == {"metadata": {"name": "p"}}
        # The wait asked for, not the 0.2 s backoff (a sleep never ends early).
        assert time.monotonic() - started >= 1.0
    assert server.requests == 2


def test_a_long_retry_after_is_capped() -> None:
    with scripted([(429, {"Retry-After": "3600"}), (503, {"Retry-After": "120"})]) as server:
        retry = Retry(attempts=3, initial_backoff_seconds=0.01)
        gateway, time_ = waits_recorded(server.port, retry, timeout_seconds=5.0)
        assert gateway.get_pod("ns", "p") == {"metadata": {"name": "p"}}
    assert time_.slept == [api.RETRY_AFTER_CAP_SECONDS, api.RETRY_AFTER_CAP_SECONDS]
    assert server.requests == 3


def test_a_retry_after_past_the_budget_ends_the_call_at_once(tmp_path: Path) -> None:
    """Not slept through (urllib3 slept up to 6 h): the 429 is the call's answer."""
    with scripted([(429, {"Retry-After": "3600"})]) as server:
        retry = Retry(attempts=2, initial_backoff_seconds=0.01)
        gateway = configured(tmp_path, server.port, retry, timeout_seconds=1.0)
        budget = budget_of(retry, 1.0)
        error = ended_within(budget + SLACK_SECONDS, lambda: gateway.get_pod("ns", "p"))
    assert isinstance(error, KubeError), error
    assert error.status == 429 and error.retry_after == 3600
    assert server.requests == 1


def test_the_budget_ends_a_call_that_retry_afters_would_prolong() -> None:
    """Twenty attempts, each answered 503 with Retry-After: 1 at once: the waits stop at the budget."""
    retry = Retry(attempts=20, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)
    with scripted([], then=(503, {"Retry-After": "1"})) as server:
        gateway, time_ = waits_recorded(server.port, retry, timeout_seconds=0.2)
        with pytest.raises(KubeError) as raised:
            gateway.get_pod("ns", "p")
    assert raised.value.status == 503
    assert sum(time_.slept) <= budget_of(retry, 0.2)
    assert 1 < server.requests < retry.attempts


def in_a_pod_without_a_token(tmp_path: Path, token: Path, monkeypatch: pytest.MonkeyPatch) -> KubeGateway:
    """A gateway in a pod whose token file was read at start and is unreadable when read again."""
    token.write_text("token-1")
    ca = tmp_path / "ca.crt"
    ca.write_text("not read before a connection is made")
    monkeypatch.setattr(incluster_config, "datetime", SHIFTED_MODULE)
    with refusing_port() as port:
        gateway = KubeGateway.from_config(
            Cluster(retry=Retry(attempts=1)),
            service_account=ServiceAccountFiles(token_file=str(token), ca_file=str(ca)),
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)},
        )
    # The client reads the token file again a minute after it last did.
    monkeypatch.setattr(ShiftedDatetime, "shift", datetime.timedelta(minutes=2))
    return gateway


@pytest.mark.parametrize(
    ("unreadable", "said"),
    [(lambda token: token.write_text(""), "Token file exists but empty"), (Path.unlink, "No such file")],
    ids=["emptied", "removed"],
)
def test_a_token_file_that_cannot_be_read_again_is_a_retryable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unreadable: Callable[[Path], object], said: str
) -> None:
    token = tmp_path / "token"
    gateway = in_a_pod_without_a_token(tmp_path, token, monkeypatch)
    unreadable(token)
    with pytest.raises(KubeError) as raised:
        gateway.get_pod("ns", "p")
    assert raised.value.status is None and raised.value.retryable
    assert "credentials" in raised.value.reason and said in raised.value.reason


def test_the_budget_is_every_attempts_timeout_and_every_backoff() -> None:
    # The defaults (4 attempts, 5 s, 0.2 s doubling): 20 s + 1.4 s of backoff, 1.68 s with its jitter.
    assert (
        api.call_budget_seconds(Retry(), 5.0)
        == pytest.approx(budget_of(Retry(), 5.0))
        == pytest.approx(21.68)
    )


@pytest.mark.parametrize("header", ["\u00b2", "\u0663", "1\u00b2"])
def test_a_retry_after_of_digits_that_are_not_ascii_is_no_wait(header: str) -> None:
    """A proxy's byte 0xB2, read as latin-1, is "²": isdigit() takes it, float() refuses it; it must
    read as no Retry-After, not escape the gateway as a ValueError."""
    assert api.retry_after_seconds(header) is None
