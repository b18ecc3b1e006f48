"""Where an etcd is: :class:`EtcdTarget` (endpoints + TLS files), endpoint parsing, prefix range ends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_k8sstate.errors import ParseError

__all__ = ["EtcdTarget", "parse_endpoint", "prefix_range_end"]


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``" (``b""`` → ``b"\\x00"``: all keys)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


@dataclass(frozen=True)
class EtcdTarget:
    """Where an etcd is and how to authenticate: ``https://host:port`` endpoints and TLS files.

    ``ca`` alone → server-verified TLS; ``ca`` + ``cert`` + ``key`` → client-certificate TLS (kubeadm's
    ``--client-cert-auth``); none → plain ``http://`` endpoints.
    """

    endpoints: tuple[str, ...]
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        eps = (self.endpoints,) if isinstance(self.endpoints, str) else tuple(self.endpoints)
        object.__setattr__(self, "endpoints", eps)
        for name in ("ca", "cert", "key"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoints": list(self.endpoints),
            "ca": str(self.ca) if self.ca else None,
            "cert": str(self.cert) if self.cert else None,
            "key": str(self.key) if self.key else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EtcdTarget:
        return cls(
            endpoints=tuple(d["endpoints"]),
            ca=Path(d["ca"]) if d.get("ca") else None,
            cert=Path(d["cert"]) if d.get("cert") else None,
            key=Path(d["key"]) if d.get("key") else None,
        )


def parse_endpoint(ep: str) -> tuple[str, int, bool]:
    """``https://h:p`` → (host, port, tls); a bare ``h:p`` is TLS. ParseError on anything else."""
    url = urlsplit(ep if "://" in ep else f"https://{ep}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ParseError("etcd endpoint", None, "https://HOST:PORT (or http://HOST:PORT)", ep)
    try:
        port = url.port or 2379
    except ValueError as exc:
        raise ParseError("etcd endpoint", None, "a port number 1-65535 in https://HOST:PORT", ep) from exc
    return url.hostname, port, url.scheme == "https"
