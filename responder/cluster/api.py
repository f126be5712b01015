"""A thin, retried door to the Kubernetes API (official client), speaking plain dicts.

Every call is synchronous (the official client is) and runs on the pipeline's thread pool.
5xx, 429 and transport errors are retried with capped backoff (a Retry-After waited for, up to
RETRY_AFTER_CAP_SECONDS); 404, 403, 409 and other 4xx end the call at once with a typed error the
actions turn into a recorded outcome. This is the only retry loop (urllib3 retries nothing), and no
call is given more than its budget (call_budget_seconds).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.incluster_config import InClusterConfigLoader

from responder.cluster.kubeconfig import CONFIG_KEYS, SettingNames, check_kubeconfig, kubeconfig_spec
from responder.config import Cluster, Retry
from responder.errors import UserError

log = logging.getLogger("serving_guard.cluster")

MERGE_PATCH = "application/merge-patch+json"
# The longest wait a Retry-After gets: an API server sends 1 s (priority and fairness); a proxy or a
# shutting-down server may ask for minutes, which an alert's decision cannot wait for.
RETRY_AFTER_CAP_SECONDS = 5.0
# The least time an attempt is given: one that could not get this much of its budget is not made.
MIN_ATTEMPT_SECONDS = 0.1
# A backoff is drawn up to this fraction longer than its step (jitter).
BACKOFF_JITTER = 0.2
# What urllib3 retries inside one attempt: nothing. Its default (3) retried connect and read errors
# and slept through a 413/429/503's Retry-After, up to 6 h. Each error is raised as it came (not
# wrapped in MaxRetryError) and each answer, a 3xx included, returned: KubeGateway.request retries.
NO_URLLIB3_RETRIES = urllib3.Retry(total=False)

# Owner kinds we know how to read, by kind: (api path prefix, plural). Anything else stops the chain.
OWNER_KINDS: Mapping[str, tuple[str, str]] = {
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "DaemonSet": ("/apis/apps/v1", "daemonsets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "CronJob": ("/apis/batch/v1", "cronjobs"),
    "InferenceService": ("/apis/serving.kserve.io/v1beta1", "inferenceservices"),
}


@dataclass(frozen=True)
class ServiceAccountFiles:
    """Where the kubelet mounts a pod's service account: its token (re-written as it rotates; the
    client reads it again at most a minute after, a minute of the wall clock: a clock stepped back
    keeps the token read before for as long as the step) and the API server's CA."""

    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


SERVICE_ACCOUNT = ServiceAccountFiles()


class KubeError(Exception):
    """An API call that did not succeed; ``status`` is the HTTP status (None: transport error, or
    the request could not be made: its credentials unreadable); ``retry_after``: the seconds a
    retryable answer's Retry-After asked for."""

    def __init__(
        self,
        status: int | None,
        reason: str,
        *,
        verb: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.verb = verb
        self.path = path
        self.retry_after = retry_after
        where = f"{verb} {path}: " if verb else ""
        code = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{where}{code}: {reason}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def forbidden(self) -> bool:
        return self.status in (401, 403)

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def _backoff_steps(retry: Retry) -> list[float]:
    """The backoff between attempts before jitter: exponential, capped."""
    steps = []
    step = retry.initial_backoff_seconds
    for _ in range(retry.attempts - 1):
        steps.append(min(step, retry.max_backoff_seconds))
        step *= 2
    return steps


def backoff_delays(retry: Retry) -> list[float]:
    """Sleeps between attempts: exponential, capped, with up to 20% jitter."""
    return [step * (1 + random.random() * BACKOFF_JITTER) for step in _backoff_steps(retry)]  # noqa: S311


def call_budget_seconds(retry: Retry, timeout_seconds: float) -> float:
    """The longest one call takes, retries included: every attempt's timeout and every backoff at
    its longest. A Retry-After's wait comes out of it, never on top."""
    longest_backoffs = sum(step * (1 + BACKOFF_JITTER) for step in _backoff_steps(retry))
    return retry.attempts * timeout_seconds + longest_backoffs


def retry_after_seconds(value: str | None) -> float | None:
    """The wait a Retry-After header asks for, in seconds or as an HTTP date (None: none readable)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # not "²", which isdigit() takes and float() refuses
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": a date with no zone is no moment
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _status_reason(status: int, body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])[:500]
    return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


def api_client_of(configuration: k8s_client.Configuration) -> k8s_client.ApiClient:
    """The client a KubeGateway sends through: urllib3 retries nothing (its pools take
    ``configuration.retries`` when the client is made), the gateway's loop does."""
    configuration.retries = NO_URLLIB3_RETRIES
    # client-go's GET retries (off by default) would be a second loop, sleeping through Retry-After.
    configuration.client_go_retries = False
    api = k8s_client.ApiClient(configuration)
    api.user_agent = "serving-guard-responder"
    return api


def transport_failure(exc: BaseException, timeout: float | None = None) -> str:
    """A request that got no HTTP answer, in a few words (what Slack and the trail show), urllib3's
    class named after them: ``cannot connect: connection refused (NewConnectionError)``."""
    cause = _os_error_under(exc)
    # urllib3's class, or the socket's or TLS error's under another wrapper (the client's ApiException).
    outer = isinstance(exc, urllib3.exceptions.HTTPError) or cause is None
    name = type(exc if outer else cause).__name__
    if isinstance(cause, ssl.SSLCertVerificationError):
        words = f"cannot connect: its TLS certificate is not trusted ({cause.verify_message})"
    elif isinstance(cause, ssl.SSLError):
        words = f"cannot connect: TLS handshake failed ({cause.reason or cause})"
    elif isinstance(cause, socket.gaierror):
        words = "cannot connect: cannot resolve the API server's name"
    elif isinstance(cause, TimeoutError) or (
        cause is None and isinstance(exc, urllib3.exceptions.TimeoutError)
    ):
        # The socket's own timeout, or urllib3's (a read timeout has no OSError under it). Not the
        # class alone: urllib3's NewConnectionError is a timeout's kind whatever the socket said.
        words = "timed out" + (f": no answer within {timeout:.3g}s" if timeout is not None else "")
    elif isinstance(cause, ConnectionRefusedError):
        words = "cannot connect: connection refused"
    elif isinstance(exc, urllib3.exceptions.ProtocolError) or isinstance(cause, ConnectionResetError):
        words = "the connection closed without an answer"
    elif cause is not None and cause.errno:
        words = f"cannot connect: {os.strerror(cause.errno).lower()}"
    else:
        return f"{name}: {exc}"[:300]
    return f"{words} ({name})"[:300]


def _os_error_under(exc: BaseException) -> OSError | None:
    """The socket or TLS error a urllib3 error was raised from (its cause, or its reason)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, urllib3.exceptions.HTTPError):
            return current
        try:
            reason = getattr(current, "reason", None)
        except Exception:  # a property that raises: no reason to follow
            reason = None
        nested = reason if isinstance(reason, BaseException) else None
        current = nested or current.__cause__ or current.__context__
    return None


def _status_error(status: int, headers: Mapping[str, str], body: bytes, *, verb: str, path: str) -> KubeError:
    """The error for an answer that is not 2xx; a retryable one carries its Retry-After."""
    error = KubeError(status, _status_reason(status, body), verb=verb, path=path)
    if error.retryable:
        error.retry_after = retry_after_seconds(headers.get("Retry-After"))
    return error


class KubeGateway:
    """Plain-dict calls to the API server through ``api_client`` (made by api_client_of), each
    retried within its budget."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: Retry | None = None,
        timeout_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api_client
        self._retry = retry or Retry()
        self._timeout = timeout_seconds
        self._budget = call_budget_seconds(self._retry, timeout_seconds)
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def from_config(
        cls,
        cluster: Cluster,
        names: SettingNames = CONFIG_KEYS,
        *,
        service_account: ServiceAccountFiles = SERVICE_ACCOUNT,
        environ: Mapping[str, str] = os.environ,
    ) -> KubeGateway:
        """In-cluster service account when no kubeconfig is named and we run in a pod; else kubeconfig.
        ``names``: what a message calls the kubeconfig and context settings (config keys, or flags)."""
        configuration = k8s_client.Configuration()
        if cluster.kubeconfig is None and _in_cluster(service_account, environ):
            loader = InClusterConfigLoader(
                token_filename=service_account.token_file,
                cert_filename=service_account.ca_file,
                environ=environ,
            )
            try:
                loader.load_and_set(configuration)
            except (k8s_config.ConfigException, OSError, ValueError) as exc:
                raise UserError(f"cluster: cannot load the in-cluster service account: {exc}") from None
        else:
            _load_kubeconfig(cluster, configuration, names)
        return cls(
            api_client_of(configuration), retry=cluster.retry, timeout_seconds=cluster.request_timeout_seconds
        )

    def close(self) -> None:
        self._api.close()

    @property
    def call_budget_seconds(self) -> float:
        """The longest one call takes, its retries included."""
        return self._budget

    # -- transport ------------------------------------------------------------------------------

    def request(
        self,
        verb: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        budget_seconds: float | None = None,
    ) -> dict[str, Any]:
        """One call, retried while its answer is retryable, attempts are left and its budget
        (call_budget_seconds, or ``budget_seconds`` when shorter) has room for the wait and another
        attempt; the last error is raised."""
        budget = self._budget if budget_seconds is None else min(self._budget, budget_seconds)
        deadline = self._clock() + budget
        delays = iter(backoff_delays(self._retry))
        attempt = 1
        while True:
            try:
                return self._once(
                    verb,
                    path,
                    body=body,
                    query=query,
                    content_type=content_type,
                    timeout=self._attempt_timeout(deadline),
                )
            except KubeError as exc:
                wait = self._wait_before_retry(exc, delays, deadline)
                if wait is None:
                    raise
                log.warning(
                    "kubernetes call failed, retrying",
                    extra={"error": str(exc), "attempt": attempt, "wait_seconds": round(wait, 3)},
                )
                self._sleep(wait)
                attempt += 1

    def _attempt_timeout(self, deadline: float) -> float:
        """The request timeout, or what is left of the budget when a Retry-After took some (never
        0: the client reads 0 as no timeout at all)."""
        least = min(MIN_ATTEMPT_SECONDS, self._timeout)
        return max(least, min(self._timeout, deadline - self._clock()))

    def _wait_before_retry(self, exc: KubeError, delays: Iterator[float], deadline: float) -> float | None:
        """How long to wait before the next attempt: the backoff, or longer when the answer's
        Retry-After asks (capped); None: no next attempt (not retryable, none left, or no time)."""
        if not exc.retryable:
            return None
        backoff = next(delays, None)
        if backoff is None:
            return None
        wait = max(backoff, min(exc.retry_after or 0.0, RETRY_AFTER_CAP_SECONDS))
        if self._clock() + wait + MIN_ATTEMPT_SECONDS > deadline:
            return None
        return wait

    def _once(
        self,
        verb: str,
        path: str,
        *,
        body: Mapping[str, Any] | None,
        query: Mapping[str, str] | None,
        content_type: str,
        timeout: float,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            # Runs the client's token hook, which may read the service account's token file again.
            request = self._api.param_serialize(
                verb,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
        except Exception as exc:  # an unreadable or empty token file, a failing exec plugin: retryable
            reason = f"cannot make the request (reading its credentials): {type(exc).__name__}: {exc}"
            raise KubeError(None, reason[:300], verb=verb, path=path) from None
        try:
            response = self._api.call_api(*request, _request_timeout=timeout)
            data = response.read()
        except Exception as exc:  # urllib3/SSL/socket errors: no HTTP status, retryable
            raise KubeError(None, transport_failure(exc, timeout), verb=verb, path=path) from None
        if not 200 <= response.status <= 299:
            raise _status_error(response.status, response.headers, data or b"", verb=verb, path=path)
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            raise KubeError(response.status, "response is not JSON", verb=verb, path=path) from None
        if not isinstance(parsed, dict):
            raise KubeError(response.status, "response is not a JSON object", verb=verb, path=path)
        return parsed

    # -- the calls the responder makes (RBAC in deploy/ allows exactly these) ------------------

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(name)}")

    def list_pods(self, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        return _items(self.request("GET", f"/api/v1/namespaces/{_seg(namespace)}/pods", query=query))

    def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            f"/api/v1/namespaces/{_seg(namespace)}/pods/{_seg(name)}",
            body=patch,
            content_type=MERGE_PATCH,
        )

    def get_namespace(self, name: str, *, budget_seconds: float | None = None) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{_seg(name)}", budget_seconds=budget_seconds)

    def get_owner(
        self, namespace: str, kind: str, name: str, *, budget_seconds: float | None = None
    ) -> dict[str, Any] | None:
        """The owner object, or None for a kind we do not follow."""
        known = OWNER_KINDS.get(kind)
        if known is None:
            return None
        prefix, plural = known
        return self.request(
            "GET",
            f"{prefix}/namespaces/{_seg(namespace)}/{plural}/{_seg(name)}",
            budget_seconds=budget_seconds,
        )

    def get_network_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"{_NP}/namespaces/{_seg(namespace)}/networkpolicies/{_seg(name)}")
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list_network_policies(self, namespace: str) -> list[dict[str, Any]]:
        return _items(self.request("GET", f"{_NP}/namespaces/{_seg(namespace)}/networkpolicies"))

    def create_network_policy(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"{_NP}/namespaces/{_seg(namespace)}/networkpolicies", body=body)

    def replace_network_policy(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent change answers 409 instead of being lost.
        The body may come from a list, whose items the API server sends without apiVersion and kind:
        they are put back."""
        typed = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **body}
        return self.request(
            "PUT", f"{_NP}/namespaces/{_seg(namespace)}/networkpolicies/{_seg(name)}", body=typed
        )

    def create_event(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/namespaces/{_seg(namespace)}/events", body=body)

    def server_version(self, *, budget_seconds: float | None = None) -> dict[str, Any]:
        return self.request("GET", "/version", budget_seconds=budget_seconds)

    def api_groups(self) -> set[str]:
        """The API groups the server serves (discovery: readable by every authenticated user)."""
        listing = self.request("GET", "/apis")
        groups = listing.get("groups") or []
        return {str(g.get("name")) for g in groups if isinstance(g, dict) and g.get("name")}


_NP = "/apis/networking.k8s.io/v1"


def _seg(value: str) -> str:
    """One URL path segment; names come from alerts, so nothing may smuggle in a '/'."""
    return quote(value, safe="")


def _items(listing: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = listing.get("items") or []
    return [item for item in items if isinstance(item, dict)]


def _load_kubeconfig(cluster: Cluster, configuration: k8s_client.Configuration, names: SettingNames) -> None:
    """Load the kubeconfig ``cluster`` names (or $KUBECONFIG, or ~/.kube/config) into
    ``configuration``; anything in it the client cannot use is a UserError naming the file."""
    where, spec = kubeconfig_spec(cluster.kubeconfig, names.kubeconfig)
    files = check_kubeconfig(where, spec, cluster.context, names.context)
    shown = files.paths[0] if len(files.paths) == 1 else spec
    try:
        k8s_config.load_kube_config(
            config_file=spec, context=cluster.context, client_configuration=configuration
        )
    except k8s_config.ConfigException as exc:
        raise UserError(f"{where} {shown}: cannot use it: {exc}") from None
    except OSError as exc:  # a certificate or token file it names
        name = f" {exc.filename}" if exc.filename else ""
        raise UserError(f"{where} {shown}: cannot read{name}: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. a *-data field that is not base64
        raise UserError(f"{where} {shown}: not a kubeconfig: {exc}") from None
    except (TypeError, KeyError, AttributeError) as exc:
        # The client indexes the parts check_kubeconfig does not look into (auth providers,
        # exec plugins) without checking them: a value of the wrong shape ends here.
        raise UserError(f"{where} {shown}: not a kubeconfig: a value of the wrong type ({exc})") from None


def _in_cluster(service_account: ServiceAccountFiles, environ: Mapping[str, str]) -> bool:
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(service_account.token_file)
