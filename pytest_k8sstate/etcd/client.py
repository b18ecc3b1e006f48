"""The few etcd v3 calls capture and reset need, over etcd-sdk-python (``pyetcd``) and its gRPC stubs.

Ranges use the generated stubs (``pyetcd.etcdrpc``) so ``revision``/``limit``/``serializable`` and gRPC errors
reach us intact; every failure becomes a :class:`CaptureError` naming the endpoint and the likely fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pytest_k8sstate.errors import CaptureError
from pytest_k8sstate.etcd.target import EtcdTarget, parse_endpoint, prefix_range_end

__all__ = ["MAX_MESSAGE", "Compacted", "EtcdClient"]

MAX_MESSAGE = 512 * 1024 * 1024


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
        host, port, tls = parse_endpoint(target.endpoints[0])
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
                raise Compacted(details) from exc
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


class Compacted(Exception):
    """The requested revision was compacted (a paged capture restarts)."""
