"""The running responder: wires config, journal, cluster, pipeline, inputs, notifier and the
metrics/health listener, and runs them on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from responder.actions.quarantine import ClusterActions
from responder.audit.query import AuditQuery, audit_params, audit_query_from
from responder.audit.text import format_table
from responder.audit.trail import load_trail
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.enrich import PodDirectory
from responder.config import Config
from responder.errors import UserError
from responder.incident import CommandForm
from responder.ingest.http import (
    AuditReaders,
    Authenticator,
    TokenSource,
    audit_token_source,
    build_input_server,
    drill_token_source,
    server_ssl_context,
    warn_of_plaintext_token,
    warn_of_unauthenticated_input,
)
from responder.ingest.httpserver import HttpServer, Request, Response, Route
from responder.ingest.lost_record import LostRecord
from responder.ingest.sink import InputName
from responder.ingest.tls_reload import CertificateReloader
from responder.journal.lock import JournalLock
from responder.journal.ops import Touch
from responder.journal.store import Journal
from responder.metrics import Metrics
from responder.pipeline import Pipeline

log = logging.getLogger("serving_guard.service")

MAINTENANCE_SECONDS = 15.0
# How long the gRPC input may take to stop (max(grpc.STOP_GRACE_SECONDS, grpc.UNREAD_SECONDS) +
# grpc.JOURNAL_CHECK_SECONDS, and room).
GRPC_STOP_SECONDS = 5.0
READY_CACHE_SECONDS = 5.0
# The readiness check's API call: how long a probe waits for its answer (alongside the journal's
# write, 2 s at most: the chart's probe gives up after 3 s), and how long the call may take in all.
READY_API_WAIT_SECONDS = 2.0
READY_API_BUDGET_SECONDS = 4.0


@dataclass
class Readiness:
    journal_ok: bool = False
    cluster_ok: bool = False
    checked_at: float = 0.0
    detail: str = ""


class ClusterCheck:
    """The readiness check's call to the API server, on a thread of its own and at most one in
    flight: while the API hangs, each probe waits on the call already made rather than make
    another, and the pipeline's pool is left to the pipeline."""

    def __init__(self, gateway: KubeGateway) -> None:
        self._gateway = gateway
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kube-ready")
        self._call: asyncio.Future[Any] | None = None
        # Whether a probe has said how the call ended: one that ended after its probe stopped
        # waiting is said by the next probe (an API answering in 3 s is slow, not unreachable).
        self._said = False

    async def problem(self) -> str | None:
        """What keeps the API server from answering (None: it answered)."""
        call = self._call
        if call is None or (call.done() and self._said):
            call = self._call = self._start()
            self._said = False
        try:
            # Shielded: a probe that stops waiting leaves the call to the next probe.
            await asyncio.wait_for(asyncio.shield(call), READY_API_WAIT_SECONDS)
        except TimeoutError:
            return f"no answer within {READY_API_WAIT_SECONDS:g} s"
        except KubeError as exc:
            self._said = True
            return str(exc)
        self._said = True
        return None

    def _start(self) -> asyncio.Future[Any]:
        version = functools.partial(self._gateway.server_version, budget_seconds=READY_API_BUDGET_SECONDS)
        call = asyncio.get_running_loop().run_in_executor(self._thread, version)
        # Its error is read here when no probe waits for it any more (else asyncio logs it as lost).
        call.add_done_callback(lambda done: done.cancelled() or done.exception())
        return call

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (the config chooses)


def _url(host: str, port: int, *, tls: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def count_lost_at_last_stop(record: LostRecord, metrics: Metrics) -> None:
    """Alerts the last runs lost as they stopped (LostRecord): counted now, where a scrape sees
    them (the series is new: ServingGuardAlertsLost fires on its _created), said, and forgotten."""
    try:
        lost = record.read()
    except (OSError, ValueError) as exc:
        lost = None
        log.error(
            "the record of alerts lost at the last stop cannot be read; the last run's log names"
            " them (kubectl logs --previous)",
            extra={"path": record.path, "error": str(exc)},
        )
    if lost is not None:
        for input_name, count in lost.counts.items():
            metrics.lost.labels(input_name).inc(count)
        log.error(
            "the last run lost alerts as it stopped: read from a sender, never journaled, so never"
            " verified, acted on or posted to Slack (counted now in serving_guard_alerts_lost_total)",
            extra={
                "counts": lost.counts,
                "alert_ids": list(lost.alert_ids),
                "stops": lost.stops,
                "last_stop": lost.last_stop,
            },
        )
    try:
        record.clear()  # counted by this start: the next does not count it again
    except OSError as exc:
        log.error("cannot remove the record of lost alerts", extra={"path": record.path, "error": str(exc)})


class Responder:
    def __init__(
        self,
        config: Config,
        gateway: KubeGateway,
        *,
        delivery: Any | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        # The config's file, named in the commands Slack gives (the commands need the same config).
        self.config_path = config_path
        self.gateway = gateway
        self.clock_ns = clock_ns
        exact_rules = [r for r in config.rule_patterns() if not any(c in r for c in "*?[")]
        self.metrics = Metrics(policies=[p.name for p in config.policies], rules=exact_rules)
        self.journal = Journal(
            config.journal.path,
            max_bytes=config.journal.max_bytes,
            retention_seconds=config.journal.retention_days * 86400,
            commit_interval_seconds=config.journal.commit_interval_ms / 1000,
            synchronous=config.journal.synchronous.upper(),
            writer=config.journal.writer,
        )
        # What the journal's bound is judged on, read at scrape time (measured by the maintenance
        # pass and after each prune to size: no query of its own).
        self.metrics.journal_max_bytes.set(config.journal.max_bytes)
        self.metrics.journal_used_bytes.set_function(lambda: self.journal.measured_used_bytes)
        self._journal_lock = JournalLock(config.journal.path)
        self._lost_record = LostRecord(config.journal.path)
        self.executor = ThreadPoolExecutor(config.cluster.workers, thread_name_prefix="kube")
        self.directory = PodDirectory(gateway, ttl_seconds=config.cluster.cache_ttl_seconds)
        self.actions = ClusterActions.of_config(gateway, config, clock_ns=clock_ns)
        self.delivery = delivery
        self.notifier: Any | None = None
        self.pipeline: Pipeline | None = None
        self.readiness = Readiness()
        self._cluster_check = ClusterCheck(gateway)
        self.http_url: str | None = None
        self.metrics_url: str | None = None
        self._runners: list[web.AppRunner] = []
        self._input_server: HttpServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self.grpc_input: Any | None = None
        self._grpc_task: asyncio.Task[None] | None = None
        self._deferred_task: asyncio.Task[None] | None = None
        self.certificates: CertificateReloader | None = None

    @property
    def input_server(self) -> HttpServer | None:
        """The HTTP input's server once started (None when the input is off)."""
        return self._input_server

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._journal_lock.acquire()
        self.journal.open(lock_fd=self._journal_lock.fileno)
        notifier = None
        if self.delivery is not None:
            from responder.notify.worker import NotificationWorker

            notifier = NotificationWorker(
                self.journal,
                self.delivery,
                self.config.slack,
                self.metrics,
                clock_ns=self.clock_ns,
                thread_window_seconds=self.config.dedupe.window_seconds,
                commands=CommandForm(self.config_path, self.config.slack.command_prefix),
                tries_by_itself=bool(self.config.dedupe.retry_withheld_seconds),
            )
        self.pipeline = Pipeline(
            self.config,
            self.journal,
            self.directory,
            self.actions,
            self.metrics,
            self.executor,
            notify=notifier.wake if notifier is not None else None,
            notifications_enabled=notifier is not None,
            clock_ns=self.clock_ns,
        )
        if notifier is not None:
            notifier.attach(self.pipeline.incidents)
            self.notifier = notifier
            self._tasks.append(asyncio.create_task(notifier.run(self._stop), name="notifier"))
            self._tasks.append(asyncio.create_task(self._check_slack(), name="slack-check"))
        await self.pipeline.recover()
        self._deferred_task = asyncio.create_task(self.pipeline.run_deferred(), name="deferred-alerts")
        self._tasks.append(self._deferred_task)
        self._tasks.append(asyncio.create_task(self.pipeline.run_idle_rechecks(), name="idle-rechecks"))
        # Start's first reads of the whole journal: a damaged page they meet stops the start with
        # one line naming the file and how to recover it (its writes say so as WriterFailed).
        with self.journal.start_failures_as_user_error():
            await self._maintain_once()
            await self.journal.measured()
        self._tasks.append(asyncio.create_task(self._maintenance(), name="maintenance"))
        # serving_guard_kubernetes_reachable says something from the start, not from the first probe.
        self._tasks.append(asyncio.create_task(self.check_ready(), name="first-readiness-check"))
        if self.config.server.metrics_listen:
            self.metrics_url = await self._serve(self._health_app(), self.config.server.metrics_listen, None)
        http = self.config.inputs.http
        if http.enabled:
            token = TokenSource(http.token) if http.token is not None else None
            short = token.short() if token is not None else None
            if short is not None:
                log.warning(short)
            warn_of_plaintext_token(http)
            warn_of_unauthenticated_input(http)
            audit_token = audit_token_source(http, token)
            drill_token = drill_token_source(http, token, audit_token)
            ssl_context = server_ssl_context(http)
            authenticator = Authenticator(http, token, drill_token, audit_token)
            audit = self._audit_route(AuditReaders(audit_token, token, drill_token))
            server = build_input_server(http, self.pipeline, authenticator, [audit], metrics=self.metrics)
            self.http_url = await self._serve_input(server, http.listen, ssl_context)
            if ssl_context is not None and http.tls is not None:
                self.certificates = CertificateReloader(http.tls, ssl_context, server.use_ssl_context)
        if self.config.inputs.grpc.enabled:
            from responder.ingest.grpc import GrpcAlertInput, check_client_tls

            # Only the local files: an unreachable Falco is retried for as long as it takes.
            check_client_tls(self.config.inputs.grpc)
            # The journal: asked at stop which of the alerts it read it holds (no false "lost").
            self.grpc_input = GrpcAlertInput(
                self.config.inputs.grpc,
                self.pipeline,
                log.getChild("grpc"),
                metrics=self.metrics,
                journal=self.journal,
                on_lost=functools.partial(self._record_lost, InputName.GRPC),
            )
            state = self.grpc_input.state
            # Read at scrape time: a maintenance pass every 15 s left it behind the stream.
            self.metrics.grpc_connected.set_function(lambda: 1 if state.connected else 0)
            self._grpc_task = asyncio.create_task(self._supervise_grpc(), name="grpc-input")
            self._tasks.append(self._grpc_task)
        count_lost_at_last_stop(self._lost_record, self.metrics)
        log.info(
            "responder started",
            extra={
                "http": self.http_url,
                "metrics": self.metrics_url,
                "grpc": self.config.inputs.grpc.enabled,
            },
        )

    def _record_lost(self, input_name: InputName, alert_ids: list[str]) -> None:
        """An input lost alerts (counted and logged by it). Running, a scrape sees the count; as
        the responder stops, its metrics endpoint is closed already: kept for the next start."""
        if not self._stop.is_set():
            return
        try:
            self._lost_record.add(input_name, alert_ids)
        except OSError as exc:
            log.error(
                "cannot record the alerts lost at this stop for the next start: only this log names them",
                extra={"path": self._lost_record.path, "error": str(exc), "count": len(alert_ids)},
            )

    async def _check_slack(self) -> None:
        """Say at start-up, loudly, if Slack credentials are wrong; never block the responder on it."""
        from responder.notify.slack import DeliveryError

        assert self.delivery is not None
        try:
            identity = await self.delivery.check()
        except DeliveryError as exc:
            log.error(
                "Slack is not usable; notifications wait in the journal and are retried",
                extra={"reason": exc.reason, "retryable": exc.retryable},
            )
            return
        log.info("Slack reachable", extra={"identity": identity})
        if self.delivery.supports_threads:
            await self._check_slack_channels()

    async def _check_slack_channels(self) -> None:
        """Say at start-up which configured channels cannot take the bot's posts (not found,
        archived, the bot not invited): a policy's go to the default channel meanwhile, the
        default channel's wait."""
        from responder.notify.slack import DeliveryError

        assert self.delivery is not None
        default = self.config.slack.default_channel
        users: dict[str, list[str]] = {}
        for policy in self.config.policies:
            if policy.slack.channel:
                users.setdefault(policy.slack.channel, []).append(policy.name)
        for channel in [c for c in dict.fromkeys((default, *users)) if c]:
            try:
                problem = await self.delivery.channel_problem(channel)
            except DeliveryError as exc:
                log.warning("cannot check a Slack channel", extra={"channel": channel, "reason": exc.reason})
                continue
            if problem is None:
                continue
            waits = channel == default
            log.error(
                "a Slack channel cannot take the bot's posts; incidents for it wait in the journal"
                if waits
                else "a Slack channel cannot take the bot's posts; its incidents go to the default channel",
                extra={"channel": channel, "reason": problem, "policies": users.get(channel, [])},
            )

    async def _supervise_grpc(self) -> None:
        """The gRPC input reconnects by itself, and waits out a journal that refuses writes (it
        stops reading until the journal takes them); this only outlives an unexpected error in
        it, so the input never silently disappears."""
        assert self.grpc_input is not None
        while not self._stop.is_set():
            try:
                await self.grpc_input.run(self._stop)
            except Exception:
                log.exception("gRPC input failed; restarting it")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.config.inputs.grpc.backoff.max_seconds)

    async def stop(self) -> None:
        self._stop.set()
        if self._input_server is not None:
            await self._input_server.stop()
            self._input_server = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._grpc_task is not None:
            # Its submits under way finish, and what it read and could not journal is named.
            await asyncio.wait({self._grpc_task}, timeout=GRPC_STOP_SECONDS)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.pipeline is not None:
            await self.pipeline.close()
            await self.pipeline.drain(timeout=10)
        if self.delivery is not None and hasattr(self.delivery, "close"):
            with contextlib.suppress(Exception):
                await self.delivery.close()
        try:
            self.journal.close()
        finally:
            self._journal_lock.release()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._cluster_check.close()
        self.gateway.close()

    async def run_until(self, stop: asyncio.Event, on_started: Callable[[], None] | None = None) -> None:
        try:
            await self.start()
            if on_started is not None:
                on_started()
            await stop.wait()
        finally:
            await self.stop()  # also after a failed start: nothing half-open is left behind

    async def _serve(self, app: web.Application, listen: str, ssl_context: Any) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = _host_port(listen)
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise UserError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self._runners.append(runner)
        bound_host, bound_port = runner.addresses[0][:2]
        return _url(bound_host, bound_port, tls=ssl_context is not None)

    async def _serve_input(self, server: HttpServer, listen: str, ssl_context: Any) -> str:
        host, port = _host_port(listen)
        try:
            bound_host, bound_port = await server.start(host, port, ssl_context)
        except OSError as exc:
            raise UserError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self._input_server = server
        return _url(bound_host, bound_port, tls=ssl_context is not None)

    # -- health, metrics, audit -----------------------------------------------------------------

    def _health_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _healthz(self, request: web.Request) -> web.Response:
        # Alive unless only a restart can help: a journal whose writer is gone accepts nothing more.
        failure = self.journal.failure
        if failure is not None:
            return web.json_response({"status": "failing", "journal": failure}, status=503)
        task = self._deferred_task
        if task is not None and task.done() and not self._stop.is_set():
            # It logs and goes on after any error; ended, alerts deferred from now on would wait for good.
            return web.json_response({"status": "failing", "deferred_alerts": "not taken up"}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = await self.check_ready()
        body = {
            "ready": ready,
            "journal": "ok" if self.readiness.journal_ok else "failing",
            "kubernetes": "ok" if self.readiness.cluster_ok else "unreachable",
            "config": "loaded",
            "detail": self.readiness_detail(),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def check_ready(self) -> bool:
        """Ready while alerts can be taken: the journal writes. The API server's state is reported
        (in /readyz's body and serving_guard_kubernetes_reachable), never held against readiness:
        Falco drops an alert its connection is refused for, and while the API is away the
        responder still journals alerts, tells Slack, and decides them again on their repeats."""
        now = time.monotonic()
        if now - self.readiness.checked_at > READY_CACHE_SECONDS:
            journal_problem, cluster_problem = await asyncio.gather(
                self._journal_problem(), self._cluster_check.problem()
            )
            details = [f"journal: {journal_problem}"] if journal_problem is not None else []
            if cluster_problem is not None:
                details.append(f"kubernetes: {cluster_problem}")
            self.readiness = Readiness(
                journal_problem is None, cluster_problem is None, now, "; ".join(details)
            )
            self.metrics.kubernetes_reachable.set(1 if cluster_problem is None else 0)
        return self.readiness.journal_ok

    def readiness_detail(self) -> str:
        """/readyz's detail: the last check's problems, and the gRPC input's lack of a stream as it
        is now (said, not held against readiness: the HTTP input may take alerts, and a restart
        does not bring Falco's gRPC output back)."""
        details = [self.readiness.detail] if self.readiness.detail else []
        state = self.grpc_input.state if self.grpc_input is not None else None
        if state is not None and not state.connected and state.no_stream_since is not None:
            since = max(0.0, time.monotonic() - state.no_stream_since)
            last = f" (last: {state.last_error})" if state.last_error else ""
            details.append(f"grpc: no Falco stream for {since:.0f} s{last}")
        return "; ".join(details)

    async def _journal_problem(self) -> str | None:
        """Why the journal cannot be written (None: it can)."""
        try:
            await asyncio.wait_for(self.journal.run(Touch()), timeout=2.0)
        except Exception as exc:  # any failure to write means not ready
            return str(exc)
        return None

    def _audit_route(self, readers: AuditReaders) -> Route:
        async def audit(request: Request) -> Response:
            try:
                params = audit_params(request.query_string)
                query = audit_query_from(params)
            except ValueError as exc:
                return Response.json(400, {"error": "bad query", "reason": str(exc)})
            loop = asyncio.get_running_loop()
            entries = await loop.run_in_executor(None, self._read_trail, query)
            if params.get("format") == "table":
                return Response(200, (format_table(entries) + "\n").encode(), "text/plain; charset=utf-8")
            return Response.json(200, {"entries": entries})

        return Route("GET", "/v1/audit", audit, check=readers.refusal)

    def _read_trail(self, query: AuditQuery) -> list[dict[str, Any]]:
        with self.journal.reader() as conn:
            return load_trail(conn, query)

    # -- maintenance ----------------------------------------------------------------------------

    async def _maintenance(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), MAINTENANCE_SECONDS)
            if self._stop.is_set():
                return
            try:
                await self._maintain_once()
            except Exception:  # keep maintaining; the log says what failed
                if self.journal.failure is None:  # else said once, and /healthz fails on it
                    log.exception("maintenance failed")

    async def _maintain_once(self) -> None:
        now = self.clock_ns()
        await self.journal.run(self.journal.op_prune(now))
        self.metrics.journal_bytes.set(self.journal.check_size())
        if self.pipeline is not None:
            self.metrics.journal_pending.set(self.journal.pending_count())
            deferred, oldest_ns = self.journal.deferred_backlog()
            self.metrics.journal_deferred.set(deferred)
            self.metrics.journal_deferred_age.set(0 if oldest_ns is None else max(0, now - oldest_ns) / 1e9)
            incidents = self.pipeline.incidents
            incidents.expire(now)
            self.metrics.incidents_open_bytes.set(incidents.held_bytes)
            self.metrics.incidents_forgotten.inc(incidents.take_evicted())
            self.metrics.breaker_open.set(1 if self.pipeline.breaker_open() else 0)
            self.metrics.block_breaker_open.set(1 if self.pipeline.block_breaker_open() else 0)
        if self.certificates is not None:
            self.certificates.check()
        if self.journal.full:
            log.error(
                "journal is full of unfinished alerts: new alerts are refused (HTTP 503, gRPC stops"
                " reading) until they are finished and can be pruned",
                extra={"bytes": self.journal.size_bytes()},
            )
