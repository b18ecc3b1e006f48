"""Capture every key under a prefix of a Kubernetes etcd at one revision.

``collect_etcd(target)`` reads ``/registry`` in pages of ``page_size`` keys: the first page is a
linearizable read and fixes the revision, every further page is read *at that revision* (``revision=``,
``limit=``, next start key = last key + ``\\x00``), so the result is one consistent moment even while the
cluster keeps writing. When the revision is compacted between pages the capture restarts (up to 3 times).

The etcd v3 client is etcd-sdk-python (``pyetcd``) behind :class:`EtcdClient`; ranges use its generated
gRPC stubs (``pyetcd.etcdrpc``) so ``revision``/``limit``/``serializable`` and gRPC errors reach us intact.

Values are decoded lazily: capture keeps the bytes, :attr:`EtcdEntry.decoded` and :attr:`EtcdEntry.sha256`
are computed on first access (``to_json`` forces them). Secrets (``/registry/secrets/``) are decoded at
capture time and their bytes dropped immediately unless ``include_secrets=True``: only identity remains.
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_k8sstate.errors import CaptureError, ParseError
from pytest_k8sstate.etcd.decode import Decoded, decode_value

__all__ = [
    "SECRETS_PREFIX",
    "EtcdClient",
    "EtcdEntry",
    "EtcdState",
    "EtcdTarget",
    "collect_etcd",
    "prefix_range_end",
]

SECRETS_PREFIX = "/registry/secrets/"

# Consecutive snapshots share most values: decode each (key, value) once. Decoded objects are shared
# between entries and must be treated as read-only.
_decode_cached = functools.lru_cache(maxsize=32768)(decode_value)
MAX_MESSAGE = 512 * 1024 * 1024
_COMPACT_RETRIES = 3


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with ``prefix``" (``b""`` → ``b"\\x00"``: all keys)."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


# --------------------------------------------------------------------------------------------------
# target
# --------------------------------------------------------------------------------------------------
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


def _parse_endpoint(ep: str) -> tuple[str, int, bool]:
    """``https://h:p`` → (host, port, tls); a bare ``h:p`` is TLS. ParseError on anything else."""
    url = urlsplit(ep if "://" in ep else f"https://{ep}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ParseError("etcd endpoint", None, "https://HOST:PORT (or http://HOST:PORT)", ep)
    try:
        port = url.port or 2379
    except ValueError as exc:
        raise ParseError("etcd endpoint", None, "a port number 1-65535 in https://HOST:PORT", ep) from exc
    return url.hostname, port, url.scheme == "https"


# --------------------------------------------------------------------------------------------------
# client adapter
# --------------------------------------------------------------------------------------------------
class EtcdClient:
    """The few etcd v3 calls we need, over pyetcd's channel handling; errors → :class:`CaptureError`."""

    def __init__(self, target: EtcdTarget, *, timeout: float = 30.0) -> None:
        import pyetcd
        from pyetcd import etcdrpc

        if not target.endpoints:
            raise CaptureError("etcd target has no endpoints; pass e.g. https://127.0.0.1:2379")
        self.target = target
        self.timeout = timeout
        self._rpc = etcdrpc
        host, port, tls = _parse_endpoint(target.endpoints[0])
        self.endpoint = target.endpoints[0]
        for f in (target.ca, target.cert, target.key):
            if f is not None and not os.access(f, os.R_OK):
                raise CaptureError(
                    f"etcd {self.endpoint}: TLS file {f} is missing or unreadable; "
                    "check the EtcdTarget ca/cert/key paths (kubeadm: /etc/kubernetes/pki/etcd/ca.crt, "
                    "apiserver-etcd-client.crt/.key)"
                )
        if tls and target.ca is None:
            raise CaptureError(
                f"etcd {self.endpoint}: an https endpoint needs the etcd CA certificate (EtcdTarget.ca)"
            )
        opts = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        self._client = pyetcd.client(
            host=host,
            port=port,
            ca_cert=str(target.ca) if tls and target.ca else None,
            cert_cert=str(target.cert) if tls and target.cert else None,
            cert_key=str(target.key) if tls and target.key else None,
            timeout=timeout,
            grpc_options=opts,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, exc: BaseException, what: str) -> CaptureError:
        code = getattr(exc, "code", None)
        details = getattr(exc, "details", None)
        code_s = code().name if callable(code) else type(exc).__name__
        det = details() if callable(details) else str(exc)
        fix = (
            "is etcd running and reachable there, and do the CA/client certificate match its "
            "--trusted-ca-file/--client-cert-auth?"
        )
        if code_s == "DEADLINE_EXCEEDED":
            fix = f"etcd did not answer within {self.timeout:g}s; is it overloaded or the endpoint wrong?"
        elif code_s in ("INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"):
            fix = "etcd rejected the request (a bug in the caller's arguments?)"
        elif code_s in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            fix = "the client certificate is not allowed (etcd auth on? use the apiserver-etcd-client cert)"
        return CaptureError(f"etcd {self.endpoint}: {what} failed ({code_s}: {det}); {fix}")

    def _call(self, method: str, request: Any, what: str, *, compactable: bool = False) -> Any:
        """One KV RPC through pyetcd's channel; every failure becomes a :class:`CaptureError`."""
        import grpc

        try:
            return getattr(self._client.kvstub, method)(request, self.timeout)
        except grpc.RpcError as exc:
            details = exc.details() if callable(getattr(exc, "details", None)) else ""
            if compactable and "compacted" in (details or ""):
                raise _Compacted(details) from exc
            raise self._fail(exc, what) from exc
        except ValueError as exc:  # pyetcd after an earlier failure: "Trying to use a failed node"
            raise self._fail(exc, what) from exc

    def range(
        self,
        key: bytes,
        range_end: bytes,
        *,
        revision: int = 0,
        limit: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
    ) -> Any:
        """One Range RPC (``RangeResponse``); ``revision=0`` = current."""
        req = self._rpc.RangeRequest(
            key=key,
            range_end=range_end,
            revision=revision,
            limit=limit,
            serializable=serializable,
            keys_only=keys_only,
        )
        return self._call("Range", req, f"Range {key!r}@{revision or 'now'}", compactable=revision != 0)

    def put(self, key: str | bytes, value: bytes) -> int:
        """Put one key; returns the new revision."""
        k = key.encode() if isinstance(key, str) else key
        resp = self._call("Put", self._rpc.PutRequest(key=k, value=value), f"Put {k!r}")
        return int(resp.header.revision)

    def put_many(self, items: Sequence[tuple[str | bytes, bytes]], batch: int = 100) -> int:
        """Write many keys in transactions of ``batch`` puts (etcd's default --max-txn-ops is 128)."""
        rev = 0
        for i in range(0, len(items), batch):
            ops = [
                self._rpc.RequestOp(
                    request_put=self._rpc.PutRequest(key=k.encode() if isinstance(k, str) else k, value=v)
                )
                for k, v in items[i : i + batch]
            ]
            resp = self._call("Txn", self._rpc.TxnRequest(success=ops), f"Txn of {len(ops)} puts")
            rev = int(resp.header.revision)
        return rev

    def delete(self, key: str | bytes, *, prefix: bool = False, range_end: bytes | None = None) -> int:
        """Delete ``key`` (with ``prefix``: every key under it; ``range_end=b"\\0"`` from ``b"\\0"``: all)."""
        k = key.encode() if isinstance(key, str) else key
        end = range_end if range_end is not None else prefix_range_end(k) if prefix else b""
        resp = self._call(
            "DeleteRange", self._rpc.DeleteRangeRequest(key=k, range_end=end), f"DeleteRange {k!r}"
        )
        return int(resp.header.revision)

    def compact(self, revision: int) -> None:
        self._call("Compact", self._rpc.CompactionRequest(revision=revision), f"Compact {revision}")


class _Compacted(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# state model
# --------------------------------------------------------------------------------------------------
class EtcdEntry:
    """One key at the captured revision.

    Captured entries hold etcd's ``KeyValue`` message; the numbers are read from it on access and
    ``decoded``/``sha256``/``raw_b64`` are computed on first use (``to_json`` forces them).
    """

    __slots__ = (
        "_create",
        "_decoded",
        "_kv",
        "_mod",
        "_raw_b64",
        "_sha256",
        "_size",
        "_value",
        "_version",
        "keep_raw",
        "key",
    )

    def __init__(
        self,
        key: str,
        mod_revision: int,
        create_revision: int,
        version: int,
        size: int,
        sha256: str | None = None,
        decoded: Decoded | None = None,
        raw_b64: str | None = None,
        *,
        value: bytes | None = None,
        keep_raw: bool = False,
    ) -> None:
        if value is None and (sha256 is None or decoded is None):
            raise ValueError("EtcdEntry needs either value= or both sha256 and decoded")
        self.key = key
        self._kv: Any = None
        self._mod = mod_revision
        self._create = create_revision
        self._version = version
        self._size = size
        self._sha256 = sha256
        self._decoded = decoded
        self._raw_b64 = raw_b64
        self._value = value
        self.keep_raw = keep_raw or raw_b64 is not None

    @classmethod
    def _captured(cls, key: str, kv: Any, keep_raw: bool) -> EtcdEntry:
        e = _new(cls)
        e.key = key
        e._kv = kv
        e._mod = e._create = e._version = e._size = 0
        e._sha256 = e._decoded = e._raw_b64 = e._value = None
        e.keep_raw = keep_raw
        return e

    @property
    def mod_revision(self) -> int:
        kv = self._kv
        return self._mod if kv is None else int(kv.mod_revision)

    @property
    def create_revision(self) -> int:
        kv = self._kv
        return self._create if kv is None else int(kv.create_revision)

    @property
    def version(self) -> int:
        kv = self._kv
        return self._version if kv is None else int(kv.version)

    @property
    def size(self) -> int:
        kv = self._kv
        return self._size if kv is None else len(kv.value)

    def _bytes(self) -> bytes:
        if self._kv is not None:
            return bytes(self._kv.value)
        assert self._value is not None
        return self._value

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self._bytes()).hexdigest()
        return self._sha256

    @property
    def decoded(self) -> Decoded:
        if self._decoded is None:
            self._decoded = _decode_cached(self.key, self._bytes())
            self._release()
        return self._decoded

    @property
    def raw_b64(self) -> str | None:
        if self._raw_b64 is None and self.keep_raw and (self._kv is not None or self._value is not None):
            self._raw_b64 = base64.b64encode(self._bytes()).decode("ascii")
        return self._raw_b64

    @property
    def value(self) -> bytes | None:
        """The raw value while still held (before decoding, or always with ``keep_raw``)."""
        if self._kv is not None or self._value is not None:
            return self._bytes()
        if self._raw_b64 is not None:
            return base64.b64decode(self._raw_b64)
        return None

    def _release(self) -> None:
        """Once hashed and decoded, keep only numbers (and the bytes with ``keep_raw``)."""
        if self._sha256 is None or self._decoded is None:
            return
        kv = self._kv
        if kv is not None:
            self._mod, self._create, self._version = (
                int(kv.mod_revision),
                int(kv.create_revision),
                int(kv.version),
            )
            self._size = len(kv.value)
            if self.keep_raw:
                self._value = bytes(kv.value)
            self._kv = None
        if not self.keep_raw:
            self._value = None

    def _redact(self) -> None:
        """Secrets: hash and identity now, never keep the bytes."""
        self.keep_raw = False
        self._sha256 = hashlib.sha256(self._bytes()).hexdigest()
        self._decoded = decode_value(self.key, self._bytes()).redacted()
        self._release()

    def to_json(self) -> dict[str, Any]:
        d = {
            "key": self.key,
            "mod_revision": self.mod_revision,
            "create_revision": self.create_revision,
            "version": self.version,
            "size": self.size,
            "sha256": self.sha256,
            "decoded": self.decoded.to_json(),
            "raw_b64": self.raw_b64,
        }
        self._release()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EtcdEntry:
        return cls(
            key=d["key"],
            mod_revision=int(d["mod_revision"]),
            create_revision=int(d["create_revision"]),
            version=int(d["version"]),
            size=int(d["size"]),
            sha256=d["sha256"],
            decoded=Decoded.from_json(d["decoded"]),
            raw_b64=d.get("raw_b64"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EtcdEntry):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"EtcdEntry({self.key!r}, mod_revision={self.mod_revision}, size={self.size})"


_new = object.__new__


@dataclass
class EtcdState:
    """Every key under ``prefix`` at ``revision`` (dict in key order)."""

    revision: int
    prefix: str
    entries: dict[str, EtcdEntry]

    def __iter__(self) -> Iterator[EtcdEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "prefix": self.prefix,
            "entries": [e.to_json() for e in self.entries.values()],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EtcdState:
        entries = [EtcdEntry.from_json(e) for e in d["entries"]]
        return cls(revision=int(d["revision"]), prefix=d["prefix"], entries={e.key: e for e in entries})


# --------------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------------
def collect_etcd(
    target: EtcdTarget | EtcdClient,
    prefix: str = "/registry",
    page_size: int = 500,
    keep_raw: bool = False,
    include_secrets: bool = False,
    *,
    timeout: float = 30.0,
    _after_page: Any = None,
) -> EtcdState:
    """Every key under ``prefix`` at one revision (see module doc). Raises :class:`CaptureError`.

    ``target`` may be an open :class:`EtcdClient` (reused, not closed) to save the TLS handshake.
    ``_after_page(page_number, revision)`` is a test hook called after each page.
    """
    if page_size < 1:
        raise CaptureError(f"page_size must be ≥ 1, got {page_size}")
    client = target if isinstance(target, EtcdClient) else EtcdClient(target, timeout=timeout)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # thousands of acyclic objects: don't let the cyclic GC walk the caller's heap meanwhile
    try:
        for attempt in range(_COMPACT_RETRIES):
            try:
                return _collect(client, prefix, page_size, keep_raw, include_secrets, _after_page)
            except _Compacted as exc:
                if attempt + 1 == _COMPACT_RETRIES:
                    raise CaptureError(
                        f"etcd {client.endpoint}: the revision was compacted while paging {prefix!r} "
                        f"{_COMPACT_RETRIES} times ({exc}); retry, or raise page_size so a capture takes "
                        "fewer round trips"
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover
    finally:
        if gc_was_enabled:
            gc.enable()
        if client is not target:
            client.close()


def _collect(
    client: EtcdClient,
    prefix: str,
    page_size: int,
    keep_raw: bool,
    include_secrets: bool,
    after_page: Any,
) -> EtcdState:
    pfx = prefix.encode()
    end = prefix_range_end(pfx)
    if not pfx:  # every key
        pfx = b"\x00"
    secrets = SECRETS_PREFIX.encode()
    redact = not include_secrets
    entries: dict[str, EtcdEntry] = {}
    start = pfx
    revision = 0
    page = 0
    while True:
        resp = client.range(start, end, revision=revision, limit=page_size, serializable=revision != 0)
        if revision == 0:
            revision = int(resp.header.revision)
        kvs = resp.kvs
        captured = EtcdEntry._captured
        for kv in kvs:
            k = kv.key
            ks = k.decode("utf-8", "backslashreplace")
            entry = captured(ks, kv, keep_raw)
            if redact and k.startswith(secrets):
                entry._redact()
            entries[ks] = entry
        page += 1
        if after_page is not None:
            after_page(page, revision)
        if not resp.more or not kvs:
            break
        start = kvs[-1].key + b"\x00"
    return EtcdState(revision=revision, prefix=prefix, entries=entries)
