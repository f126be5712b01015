"""Files the responder reads by a path it is given (kubeconfigs, TLS certificates, keys, CAs, a
token re-read) are bounded: /dev/zero or a huge file is a one-line error naming the file, never a
MemoryError. Files that ssl, gRPC or the Kubernetes client read again by path must be regular files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from responder.cluster.kubeconfig import check_kubeconfig
from responder.config import ClientTLS, GrpcInput, HttpInput, SecretRef, ServerTLS
from responder.errors import UserError
from responder.ingest.grpc import check_client_tls
from responder.ingest.http import TokenSource, server_ssl_context


def huge(tmp_path: Path, size: int = 17 * 1024 * 1024) -> str:
    """A sparse regular file past every bound (no disk taken)."""
    path = tmp_path / "huge.pem"
    with path.open("wb") as handle:
        handle.truncate(size)
    return str(path)


def test_a_kubeconfig_that_is_a_device_is_refused_by_name() -> None:
    with pytest.raises(UserError) as refused:
        check_kubeconfig("cluster.kubeconfig", "/dev/zero", None)
    assert str(refused.value) == "cluster.kubeconfig /dev/zero is a character device, not a regular file"


def test_a_kubeconfig_past_16_mib_is_refused_by_name(tmp_path: Path) -> None:
    path = huge(tmp_path)
    with pytest.raises(UserError) as refused:
        check_kubeconfig("--kubeconfig", path, None)
    assert (
        str(refused.value) == f"--kubeconfig {path} is larger than 16 MiB, far more than a kubeconfig holds"
    )


@pytest.mark.parametrize("key", ["cert_file", "key_file", "client_ca_file"])
def test_http_tls_files_are_bounded_and_named(tmp_path: Path, key: str) -> None:
    good = str(Path(__file__).parent / "conftest.py")  # readable: the files before the key are fine
    files = {"cert_file": good, "key_file": good, "client_ca_file": good, key: huge(tmp_path)}
    config = HttpInput(tls=ServerTLS.model_validate(files))
    with pytest.raises(UserError) as refused:
        server_ssl_context(config)
    assert str(refused.value) == (
        f"inputs.http.tls: cannot load certificates: {key} {files[key]} is larger than 4 MiB,"
        " far more than a certificate, key or CA bundle holds"
    )


def test_an_http_certificate_that_is_a_device_is_refused_by_name() -> None:
    config = HttpInput(tls=ServerTLS(cert_file="/dev/zero", key_file="/dev/zero"), allow_unauthenticated=True)
    with pytest.raises(UserError) as refused:
        server_ssl_context(config)
    assert str(refused.value) == (
        "inputs.http.tls: cannot load certificates: cert_file /dev/zero is a character device,"
        " not a regular file"
    )


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_grpc_tls_files_are_bounded_and_named(tmp_path: Path, key: str) -> None:
    good = str(Path(__file__).parent / "conftest.py")
    files = {"ca_file": good, "cert_file": good, "key_file": good, key: huge(tmp_path)}
    config = GrpcInput(enabled=True, address="127.0.0.1:5060", tls=ClientTLS(**files))
    with pytest.raises(UserError) as refused:
        check_client_tls(config)
    assert str(refused.value) == (
        f"inputs.grpc.tls.{key}: {files[key]} is larger than 4 MiB, far more than a certificate, key or CA"
        " bundle holds"
    )


def test_a_token_file_that_grew_past_the_bound_keeps_the_previous_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    now = [0.0]
    source = TokenSource(SecretRef(file=str(token_file)), clock=lambda: now[0])
    with token_file.open("wb") as handle:
        handle.truncate(17 * 1024 * 1024)
    now[0] = 10_000.0
    with caplog.at_level(logging.WARNING):
        assert source.current() == (b"first-token",)
    assert f"{token_file} is larger than 64 KiB, far more than a token" in caplog.text
