"""A thin, retried door to the Kubernetes API (official client), speaking plain dicts.

Every call is synchronous (the official client is) and runs on the pipeline's thread pool.
5xx, 429 and transport errors are retried with capped backoff; 404, 403, 409 and other 4xx
end the call at once with a typed error the actions turn into a recorded outcome.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.incluster_config import InClusterConfigLoader

from responder.cluster.kubeconfig import CONFIG_KEYS, SettingNames, check_kubeconfig, kubeconfig_spec
from responder.config import Cluster, Retry
from responder.errors import UserError

log = logging.getLogger("serving_guard.cluster")

MERGE_PATCH = "application/merge-patch+json"

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
    client reads it again at most a minute after) and the API server's CA."""

    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


SERVICE_ACCOUNT = ServiceAccountFiles()


class KubeError(Exception):
    """An API call that did not succeed; ``status`` is the HTTP status (None: transport error)."""

    def __init__(self, status: int | None, reason: str, *, verb: str = "", path: str = "") -> None:
        self.status = status
        self.reason = reason
        self.verb = verb
        self.path = path
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


def backoff_delays(retry: Retry) -> list[float]:
    """Sleeps between attempts: exponential, capped, with up to 20% jitter."""
    delays = []
    delay = retry.initial_backoff_seconds
    for _ in range(retry.attempts - 1):
        delays.append(min(delay, retry.max_backoff_seconds) * (1 + random.random() * 0.2))  # noqa: S311
        delay *= 2
    return delays


def _status_reason(status: int, body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])[:500]
    return body[:200].decode("utf-8", "replace") or f"HTTP {status}"


class KubeGateway:
    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: Retry | None = None,
        timeout_seconds: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api_client
        self._retry = retry or Retry()
        self._timeout = timeout_seconds
        self._sleep = sleep

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
        api = k8s_client.ApiClient(configuration)
        api.user_agent = "serving-guard-responder"
        return cls(api, retry=cluster.retry, timeout_seconds=cluster.request_timeout_seconds)

    def close(self) -> None:
        self._api.close()

    # -- transport ------------------------------------------------------------------------------

    def request(
        self,
        verb: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        delays = backoff_delays(self._retry)
        attempt = 0
        while True:
            try:
                return self._once(verb, path, body=body, query=query, content_type=content_type)
            except KubeError as exc:
                if not exc.retryable or attempt >= len(delays):
                    raise
                log.warning(
                    "kubernetes call failed, retrying", extra={"error": str(exc), "attempt": attempt + 1}
                )
                self._sleep(delays[attempt])
                attempt += 1

    def _once(
        self,
        verb: str,
        path: str,
        *,
        body: Mapping[str, Any] | None,
        query: Mapping[str, str] | None,
        content_type: str,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self._api.param_serialize(
            verb,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*request, _request_timeout=self._timeout)
            data = response.read()
        except Exception as exc:  # urllib3/SSL/socket errors: no HTTP status, retryable
            raise KubeError(None, f"{type(exc).__name__}: {exc}"[:300], verb=verb, path=path) from None
        if not 200 <= response.status <= 299:
            raise KubeError(
                response.status, _status_reason(response.status, data or b""), verb=verb, path=path
            )
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

    def get_namespace(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{_seg(name)}")

    def get_owner(self, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
        """The owner object, or None for a kind we do not follow."""
        known = OWNER_KINDS.get(kind)
        if known is None:
            return None
        prefix, plural = known
        return self.request("GET", f"{prefix}/namespaces/{_seg(namespace)}/{plural}/{_seg(name)}")

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

    def server_version(self) -> dict[str, Any]:
        return self.request("GET", "/version")

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
