"""Pick up renewed certificates (cert-manager rotates them in place) without a restart.

Each reload builds a new SSLContext from the files as they are now, and the server takes it for
new handshakes only once it loaded whole: a certificate renewed before its key, a truncated file
or an encrypted key leave the previous context serving, untouched (``load_cert_chain`` on the live
context would install the new certificate before failing on its key, and every handshake after it
would fail). The new context trusts the CAs the client CA file holds now, as a restart would.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable

from responder.config import ServerTLS

log = logging.getLogger("serving_guard.tls")


class CertificateFilesError(Exception):
    """The server's certificate files cannot make a TLS context; the message names the file."""


class _KeyIsEncrypted(Exception):
    """Raised by the password callback: the key wants a passphrase, which is never asked for."""


def _refuse_passphrase() -> str:
    # Without a callback, OpenSSL would prompt on the terminal and block the event loop.
    raise _KeyIsEncrypted


def new_server_context(tls: ServerTLS, verify_mode: ssl.VerifyMode = ssl.CERT_NONE) -> ssl.SSLContext:
    """A TLS server context with the chain and key (and the client CA, when set) as the files hold
    them now, or CertificateFilesError saying which file is wrong and how."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_passphrase)
    except _KeyIsEncrypted:
        raise CertificateFilesError(
            f"key_file {tls.key_file}: the key is encrypted; serving-guard never prompts for a passphrase: "
            "give an unencrypted key (readable by the responder alone)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise CertificateFilesError(
                f"cert_file {tls.cert_file} is not the certificate of key_file {tls.key_file} "
                "(one of them was renewed without the other?)"
            ) from None
        raise CertificateFilesError(
            f"cert_file {tls.cert_file} with key_file {tls.key_file}: {exc}"
        ) from None
    except OSError as exc:
        raise CertificateFilesError(
            f"cert_file {tls.cert_file} with key_file {tls.key_file}: {exc.strerror or exc}"
        ) from None
    if tls.client_ca_file:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateFilesError(f"client_ca_file {tls.client_ca_file}: {exc}") from None
        context.verify_mode = verify_mode
    return context


def _stamp(path: str) -> tuple[float, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime, stat.st_size)


class CertificateReloader:
    """Watches the certificate files; on a change, builds a new context and hands it to ``install``
    (the server's, used for the next handshakes) only if it loaded."""

    def __init__(
        self, tls: ServerTLS, context: ssl.SSLContext, install: Callable[[ssl.SSLContext], None]
    ) -> None:
        self._tls = tls
        self._verify_mode = context.verify_mode
        self._install = install
        self._stamps = self._current()
        self.reloads = 0

    def _files(self) -> list[str]:
        return [f for f in (self._tls.cert_file, self._tls.key_file, self._tls.client_ca_file) if f]

    def _current(self) -> list[tuple[float, int] | None]:
        return [_stamp(path) for path in self._files()]

    def check(self) -> bool:
        """Reload when any file changed; a broken new file is logged and the serving context kept."""
        stamps = self._current()
        if stamps == self._stamps or None in stamps:
            return False
        try:
            context = new_server_context(self._tls, self._verify_mode)
        except CertificateFilesError as exc:
            log.error(
                "renewed certificates could not be loaded; keeping the previous ones",
                extra={"error": str(exc)},
            )
            return False
        self._stamps = stamps
        self._install(context)
        self.reloads += 1
        log.info("reloaded TLS certificates", extra={"cert_file": self._tls.cert_file})
        return True
