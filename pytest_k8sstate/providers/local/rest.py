"""A minimal JSON-over-HTTPS client for the few API calls create and readiness need.

It authenticates with the admin client certificate and talks to the apiserver through the port forwarder
(``127.0.0.1:<port>`` in the root namespace); one keep-alive connection, reopened once after an error.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any

__all__ = ["RestClient"]


class RestClient:
    """Minimal JSON-over-HTTPS client (keep-alive)."""

    def __init__(self, host: str, port: int, ca: Path, crt: Path, key: Path, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.ctx.load_cert_chain(str(crt), str(key))
        self._conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.ctx, timeout=self.timeout
            )
        return self._conn

    def _send(self, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request on the kept connection; closes it on any transport error (and re-raises)."""
        conn = self._connection()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, parsed JSON body)`` (the text when the body is not JSON); retried once on a new
        connection when the kept one fails (the server may have closed it)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            status, raw = self._send(method, path, data, headers)
        except (OSError, http.client.HTTPException):
            status, raw = self._send(method, path, data, headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, parsed

    def text(self, path: str) -> tuple[int, str]:
        """``GET path`` as text (``/readyz``); no retry."""
        status, raw = self._send("GET", path, None, {})
        return status, raw.decode(errors="replace")
