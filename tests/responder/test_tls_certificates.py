"""The HTTP input's certificate files: a renewal that does not load leaves the previous pair serving
(really: handshakes go on), an encrypted key is refused by name and never prompted for, at start
and on rotation. Real TLS handshakes on 127.0.0.1 with generated certificates."""

from __future__ import annotations

import logging
import os
import pty
import select
import shutil
import signal
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from responder.config import HttpInput, ServerTLS
from responder.errors import UserError
from responder.ingest.http import server_ssl_context
from responder.service import Responder
from simulators.pki import TestPKI, make_test_pki
from tests.helpers import Records
from tests.responder.test_http_input import Seeded, body_for, post, start

ENCRYPTED = (
    "the key is encrypted; serving-guard never prompts for a passphrase: give an unencrypted key "
    "(readable by the responder alone)"
)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_test_pki(tmp_path / "pki")


def encrypted_copy(key_file: str, path: Path) -> str:
    """``key_file``'s key, encrypted with a passphrase (as `openssl ec -aes256` writes it)."""
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    return str(path)


def served_copy(pki: TestPKI, directory: Path) -> dict[str, str]:
    """The server's pair copied where a renewal can replace it (as cert-manager's Secret volume)."""
    directory.mkdir()
    shutil.copy(pki.server.cert_file, directory / "tls.crt")
    shutil.copy(pki.server.key_file, directory / "tls.key")
    return {
        "cert_file": str(directory / "tls.crt"),
        "key_file": str(directory / "tls.key"),
        "client_ca_file": pki.ca_file,
    }


def trusting(ca_file: str, pki: TestPKI) -> ssl.SSLContext:
    """A sender with the good client certificate that trusts servers of ``ca_file``."""
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(pki.client.cert_file, pki.client.key_file)
    return context


def reload_refused(responder: Responder) -> str:
    """Runs the reload a maintenance pass runs; it must keep the previous pair: the error logged."""
    assert responder.certificates is not None
    with Records("serving_guard.tls", logging.ERROR) as records:
        assert not responder.certificates.check()
    assert records.messages == ["renewed certificates could not be loaded; keeping the previous ones"]
    return str(records.records[0].__dict__["error"])


async def test_a_certificate_renewed_before_its_key_keeps_the_previous_pair_serving(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    tls = served_copy(pki, tmp_path / "served")
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    try:
        url = responder.http_url or ""
        renewed = make_test_pki(tmp_path / "renewed")  # a new CA signs the renewed server certificate
        shutil.copy(renewed.server.cert_file, tls["cert_file"])  # the certificate first

        error = reload_refused(responder)
        assert error == (
            f"cert_file {tls['cert_file']} is not the certificate of key_file {tls['key_file']} "
            "(one of them was renewed without the other?)"
        )
        # Kept, really: new handshakes still get the previous certificate, with its key.
        assert (await post(url, body_for(seeded[1], n=1), ssl_context=trusting(pki.ca_file, pki)))[0] == 202

        shutil.copy(renewed.server.key_file, tls["key_file"])  # then its key: the pair loads
        assert responder.certificates is not None and responder.certificates.check()
        assert (await post(url, body_for(seeded[1], n=2), ssl_context=trusting(renewed.ca_file, pki)))[
            0
        ] == 202
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the previous one is gone
            await post(url, body_for(seeded[1], n=3), ssl_context=trusting(pki.ca_file, pki))
    finally:
        await responder.stop()


async def test_an_encrypted_key_rotated_in_is_refused_and_the_previous_pair_kept(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    tls = served_copy(pki, tmp_path / "served")
    responder = await start(tmp_path, seeded[2], {"tls": tls})
    try:
        renewed = make_test_pki(tmp_path / "renewed")
        encrypted_copy(renewed.server.key_file, Path(tls["key_file"]))
        shutil.copy(renewed.server.cert_file, tls["cert_file"])

        assert reload_refused(responder) == f"key_file {tls['key_file']}: {ENCRYPTED}"
        status, _, _ = await post(
            responder.http_url or "", body_for(seeded[1]), ssl_context=trusting(pki.ca_file, pki)
        )
        assert status == 202
    finally:
        await responder.stop()


def test_an_encrypted_key_is_refused_at_start_naming_the_file(tmp_path: Path, pki: TestPKI) -> None:
    key_file = encrypted_copy(pki.server.key_file, tmp_path / "server-enc.key")
    tls = ServerTLS(cert_file=pki.server.cert_file, key_file=key_file, client_ca_file=pki.ca_file)
    with pytest.raises(UserError) as refused:
        server_ssl_context(HttpInput(listen="127.0.0.1:0", tls=tls))
    assert (
        str(refused.value) == f"inputs.http.tls: cannot load certificates: key_file {key_file}: {ENCRYPTED}"
    )


def run_under_a_terminal(argv: list[str], timeout_seconds: float) -> tuple[int, str]:
    """Runs ``argv`` with a pseudo-terminal as its controlling terminal (where OpenSSL prompts for a
    passphrase): its exit status and everything it wrote. Killed if still running at the timeout."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child
        os.execv(argv[0], argv)
    output = bytearray()
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # every process holding the terminal closed it
                break
            if not chunk:
                break
            output += chunk
        # The terminal closes as the child exits: wait for its exit, up to the same deadline.
        finished, status = os.waitpid(pid, os.WNOHANG)
        while not finished and time.monotonic() < deadline:
            time.sleep(0.05)
            finished, status = os.waitpid(pid, os.WNOHANG)
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(
                f"still running after {timeout_seconds} s: {output.decode(errors='replace')}"
            )
    finally:
        os.close(terminal)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_serve_under_a_terminal_never_prompts_for_the_key_s_passphrase(
    tmp_path: Path, seeded: Seeded, pki: TestPKI
) -> None:
    key_file = encrypted_copy(pki.server.key_file, tmp_path / "server-enc.key")
    config = tmp_path / "config.yaml"
    tls = {"cert_file": pki.server.cert_file, "key_file": key_file, "client_ca_file": pki.ca_file}
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": {"http": {"listen": "127.0.0.1:0", "tls": tls}},
                "server": {"metrics_listen": None},
                "cluster": {"kubeconfig": seeded[2]},
                "journal": {"path": str(tmp_path / "journal.db")},
                "logging": {"level": "error"},
            }
        )
    )
    code, output = run_under_a_terminal(
        [sys.executable, "-m", "responder", "serve", "--config", str(config)], timeout_seconds=60
    )
    assert "pass phrase" not in output.lower()
    assert code == 2, output
    assert f"key_file {key_file}: the key is encrypted" in output
