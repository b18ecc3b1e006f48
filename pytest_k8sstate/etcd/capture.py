"""Capture every key under a prefix of a Kubernetes etcd at one revision: EtcdEntry, EtcdState, collect_etcd.

``collect_etcd(target)`` reads ``/registry`` in pages of ``page_size`` keys: the first page is a
linearizable read and fixes the revision, every further page is read *at that revision* (``revision=``,
``limit=``, next start key = last key + ``\\x00``), so the result is one consistent moment even while the
cluster keeps writing. When the revision is compacted between pages the capture restarts (up to 3 times).

The etcd calls go through :class:`~pytest_k8sstate.etcd.client.EtcdClient`.

Values are decoded lazily: capture keeps the bytes, :attr:`EtcdEntry.decoded` and :attr:`EtcdEntry.sha256`
are computed on first access (``to_json`` forces them). Secrets (``/registry/secrets/``) are decoded at
capture time and their bytes dropped immediately unless ``include_secrets=True``: only identity remains.
"""

from __future__ import annotations

import atexit
import base64
import functools
import gc
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pytest_k8sstate.errors import CaptureError
from pytest_k8sstate.etcd.client import Compacted, EtcdClient
from pytest_k8sstate.etcd.decode import Decoded, decode_value
from pytest_k8sstate.etcd.target import EtcdTarget, prefix_range_end

__all__ = ["SECRETS_PREFIX", "EtcdEntry", "EtcdState", "collect_etcd"]

SECRETS_PREFIX = "/registry/secrets/"

# Consecutive snapshots share most values: decode each (key, value) once. Decoded objects are shared
# between entries and must be treated as read-only.
_decode_cached = functools.lru_cache(maxsize=32768)(decode_value)
_COMPACT_RETRIES = 3


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

    def write_id(self) -> tuple[int, int, int, int]:
        """``(mod_revision, create_revision, version, size)``: in one etcd, the same key with the same
        ``mod_revision`` is the same write, hence the same value (what a diff compares first)."""
        kv = self._kv
        if kv is None:
            return (self._mod, self._create, self._version, self._size)
        return (kv.mod_revision, kv.create_revision, kv.version, len(kv.value))

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
    page_size: int = 5000,
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
    if isinstance(target, EtcdTarget) and shared_clients_enabled():
        try:
            return _collect_retrying(
                _shared_client(target, timeout), prefix, page_size, keep_raw, include_secrets, _after_page
            )
        except CaptureError:
            # the kept connection may be the broken one (etcd restarted, pyetcd marked its node failed):
            # forget it and try once on a new connection, whose error is the one reported
            _drop_shared_client(target, timeout)
            return _collect_retrying(
                _shared_client(target, timeout), prefix, page_size, keep_raw, include_secrets, _after_page
            )
    client = target if isinstance(target, EtcdClient) else EtcdClient(target, timeout=timeout)
    try:
        return _collect_retrying(client, prefix, page_size, keep_raw, include_secrets, _after_page)
    finally:
        if client is not target:
            client.close()


def _collect_retrying(
    client: EtcdClient, prefix: str, page_size: int, keep_raw: bool, include_secrets: bool, _after_page: Any
) -> EtcdState:
    gc_was_enabled = gc.isenabled()
    gc.disable()  # thousands of acyclic objects: don't let the cyclic GC walk the caller's heap meanwhile
    try:
        for attempt in range(_COMPACT_RETRIES):
            try:
                return _collect(client, prefix, page_size, keep_raw, include_secrets, _after_page)
            except Compacted as exc:
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


# --------------------------------------------------------------------------------------------------
# one kept connection per etcd target: a snapshot does not pay a TLS handshake (about 10 ms) each time
# --------------------------------------------------------------------------------------------------
SHARED_ENV = "K8SSTATE_ETCD_KEEP_CONNECTION"
_MAX_SHARED = 8
_shared: OrderedDict[tuple[Any, ...], EtcdClient] = OrderedDict()
_shared_lock = threading.Lock()


def shared_clients_enabled() -> bool:
    """False when ``$K8SSTATE_ETCD_KEEP_CONNECTION`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get(SHARED_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _shared_key(target: EtcdTarget, timeout: float) -> tuple[Any, ...]:
    """The target and its TLS files' identity: certificates rewritten at the same paths (a new cluster
    of the same name) get a new connection."""
    files = []
    for f in (target.ca, target.cert, target.key):
        try:
            st = os.stat(f) if f is not None else None
        except OSError:
            st = None
        files.append((st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None)
    return (target, timeout, tuple(files))


def _shared_client(target: EtcdTarget, timeout: float) -> EtcdClient:
    key = _shared_key(target, timeout)
    with _shared_lock:
        client = _shared.get(key)
        if client is not None:
            _shared.move_to_end(key)
            return client
    client = EtcdClient(target, timeout=timeout)
    evicted: list[EtcdClient] = []
    with _shared_lock:
        other = _shared.get(key)
        if other is not None:  # another thread was first
            evicted.append(client)
            client = other
        else:
            _shared[key] = client
            while len(_shared) > _MAX_SHARED:
                evicted.append(_shared.popitem(last=False)[1])
    for c in evicted:
        c.close()
    return client


def _drop_shared_client(target: EtcdTarget, timeout: float) -> None:
    with _shared_lock:
        client = _shared.pop(_shared_key(target, timeout), None)
    if client is not None:
        client.close()


def close_shared_clients() -> None:
    """Close every kept etcd connection (at exit; also for tests)."""
    with _shared_lock:
        clients = list(_shared.values())
        _shared.clear()
    for c in clients:
        try:
            c.close()
        except Exception:
            pass


atexit.register(close_shared_clients)


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
