"""A small client for a running responder's HTTP API (POST /v1/alerts, GET /v1/audit), with the
same authentication options the input accepts. Used by `audit`, `replay`, `verify`, the demo
and the benchmark."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from responder.errors import UserError


@dataclass(frozen=True)
class ClientAuth:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None and self.cert_file is None:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise UserError(f"cannot load client certificate {self.cert_file}: {exc}") from None
        return context

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass(frozen=True)
class PostResult:
    status: int
    body: dict[str, Any]
    retry_after: float | None = None


class ResponderClient:
    def __init__(
        self,
        base_url: str,
        auth: ClientAuth | None = None,
        *,
        timeout_seconds: float = 10.0,
        connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth or ClientAuth()
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ResponderClient:
        connector = aiohttp.TCPConnector(ssl=self._auth.ssl_context() or False, limit=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._auth.headers()
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use ResponderClient as an async context manager")
        return self._session

    async def post_alert(self, body: bytes) -> PostResult:
        async with self.session.post(
            f"{self.base_url}/v1/alerts", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = {"error": (await response.text())[:200]}
            retry = response.headers.get("Retry-After")
            return PostResult(
                response.status,
                payload if isinstance(payload, dict) else {},
                float(retry) if retry and retry.isdigit() else None,
            )

    async def audit(self, **params: str) -> list[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v}
        async with self.session.get(f"{self.base_url}/v1/audit", params=query) as response:
            payload = await response.json(content_type=None)
            if response.status != 200:
                raise UserError(f"audit request failed: HTTP {response.status}: {payload}")
            entries = payload.get("entries") if isinstance(payload, dict) else None
            if not isinstance(entries, list):
                raise UserError("audit response has no entries list")
            return entries
