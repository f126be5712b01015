"""Pick up renewed certificates (cert-manager rotates them in place) without a restart.

New TLS handshakes use whatever chain the SSLContext holds, so reloading the files into the
same context is enough. A CA file that changes is added to the trusted set; CAs that were
removed stay trusted until the next restart.
"""

from __future__ import annotations

import logging
import os
import ssl

from responder.config import ServerTLS

log = logging.getLogger("serving_guard.tls")


def load_server_certificates(context: ssl.SSLContext, tls: ServerTLS) -> None:
    """Load (or load again) the server chain and, when set, the CA client certificates must chain to."""
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(cafile=tls.client_ca_file)


def _stamp(path: str) -> tuple[float, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime, stat.st_size)


class CertificateReloader:
    def __init__(self, context: ssl.SSLContext, tls: ServerTLS) -> None:
        self._context = context
        self._tls = tls
        self._stamps = self._current()
        self.reloads = 0

    def _files(self) -> list[str]:
        return [f for f in (self._tls.cert_file, self._tls.key_file, self._tls.client_ca_file) if f]

    def _current(self) -> list[tuple[float, int] | None]:
        return [_stamp(path) for path in self._files()]

    def check(self) -> bool:
        """Reload when any file changed; a broken new file is logged and the old chain kept."""
        stamps = self._current()
        if stamps == self._stamps or None in stamps:
            return False
        try:
            load_server_certificates(self._context, self._tls)
        except (OSError, ssl.SSLError) as exc:
            log.error(
                "renewed certificates could not be loaded; keeping the previous ones",
                extra={"error": str(exc)},
            )
            return False
        self._stamps = stamps
        self.reloads += 1
        log.info("reloaded TLS certificates", extra={"cert_file": self._tls.cert_file})
        return True
