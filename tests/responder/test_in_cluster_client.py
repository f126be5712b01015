"""Run in a pod, the responder reaches the API server with its service account: over https,
trusting only the CA the kubelet mounts, with the token the kubelet mounts, and with the token the
kubelet writes next once it rotates it (bound tokens expire: an hour by default). Against the
emulator served over TLS and accepting only the tokens the test says, as an API server does."""

from __future__ import annotations

import datetime
import ssl
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes.config import incluster_config

from responder.cluster.api import KubeError, KubeGateway, ServiceAccountFiles
from responder.config import Cluster, Retry
from responder.errors import UserError
from simulators.cluster_emulator import RunningCluster
from simulators.pki import TestPKI, make_test_pki
from simulators.seed import SeededPod, seed_serving_cluster


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_test_pki(tmp_path / "pki")


@pytest.fixture
def api_server(pki: TestPKI) -> Iterator[tuple[RunningCluster, dict[str, SeededPod]]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert_file, pki.server.key_file)
    with RunningCluster(tls=context) as running:
        pods = running.call(seed_serving_cluster, running.emulator)
        running.emulator.bearer_tokens = {"token-1"}
        yield running, pods


class ShiftedDatetime(datetime.datetime):
    """The client's clock for its token's refresh, moved by the test (no minute-long sleep)."""

    shift = datetime.timedelta()

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> ShiftedDatetime:
        return super().now(tz) + cls.shift


# What the client's module sees as ``datetime`` (it calls datetime.datetime.now()).
SHIFTED_MODULE = types.SimpleNamespace(datetime=ShiftedDatetime, timedelta=datetime.timedelta)


def in_a_pod(running: RunningCluster, token_file: Path, ca_file: str) -> KubeGateway:
    return KubeGateway.from_config(
        Cluster(retry=Retry(attempts=1)),
        service_account=ServiceAccountFiles(token_file=str(token_file), ca_file=ca_file),
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(running.port)},
    )


def test_the_service_account_is_used_over_https_and_its_rotated_token_is_read_again(
    api_server: tuple[RunningCluster, dict[str, SeededPod]],
    pki: TestPKI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running, pods = api_server
    vllm = pods["vllm"]
    monkeypatch.setattr(incluster_config, "datetime", SHIFTED_MODULE)
    token_file = tmp_path / "token"
    token_file.write_text("token-1")
    gateway = in_a_pod(running, token_file, pki.ca_file)
    try:
        assert gateway.get_pod(vllm.namespace, vllm.name)["metadata"]["name"] == vllm.name
        assert running.emulator.tokens_seen["token-1"] >= 1
        # The kubelet writes the next token before the first expires; the first still works a while.
        token_file.write_text("token-2")
        running.emulator.bearer_tokens = {"token-1", "token-2"}
        ShiftedDatetime.shift = datetime.timedelta(minutes=2)
        gateway.get_pod(vllm.namespace, vllm.name)
        # The first has expired: every call, from every pool thread, carries the second.
        running.emulator.bearer_tokens = {"token-2"}
        with ThreadPoolExecutor(8) as pool:
            names = list(pool.map(lambda _: gateway.get_pod(vllm.namespace, vllm.name), range(32)))
        assert {pod["metadata"]["name"] for pod in names} == {vllm.name}
        assert running.emulator.tokens_seen["token-2"] >= 33
    finally:
        ShiftedDatetime.shift = datetime.timedelta()
        gateway.close()


def test_a_token_the_api_server_does_not_accept_is_a_401_not_a_retry(
    api_server: tuple[RunningCluster, dict[str, SeededPod]], pki: TestPKI, tmp_path: Path
) -> None:
    running, pods = api_server
    token_file = tmp_path / "token"
    token_file.write_text("revoked")
    gateway = in_a_pod(running, token_file, pki.ca_file)
    try:
        with pytest.raises(KubeError) as refused:
            gateway.get_pod(pods["vllm"].namespace, pods["vllm"].name)
        assert refused.value.status == 401 and not refused.value.retryable
    finally:
        gateway.close()


def test_an_api_server_whose_certificate_the_mounted_ca_did_not_sign_is_not_talked_to(
    api_server: tuple[RunningCluster, dict[str, SeededPod]], pki: TestPKI, tmp_path: Path
) -> None:
    running, pods = api_server
    token_file = tmp_path / "token"
    token_file.write_text("token-1")
    gateway = in_a_pod(running, token_file, pki.rogue_ca_file)
    try:
        with pytest.raises(KubeError) as refused:
            gateway.get_pod(pods["vllm"].namespace, pods["vllm"].name)
        assert refused.value.status is None
        assert refused.value.reason == (
            "cannot connect: its TLS certificate is not trusted (unable to get local issuer certificate)"
            " (SSLCertVerificationError)"
        )
        assert running.emulator.tokens_seen["token-1"] == 0  # the token never left the pod
    finally:
        gateway.close()


def test_an_empty_mounted_token_is_one_clear_error(
    api_server: tuple[RunningCluster, dict[str, SeededPod]], pki: TestPKI, tmp_path: Path
) -> None:
    running, _ = api_server
    token_file = tmp_path / "token"
    token_file.write_text("")
    with pytest.raises(
        UserError, match="cannot load the in-cluster service account: Token file exists but empty"
    ):
        in_a_pod(running, token_file, pki.ca_file)
