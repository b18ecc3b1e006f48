"""What a decoded etcd value says: :class:`Decoded` (identity + a field tree), and identity from a mapping."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Decoded", "Encoding", "identity_from_mapping", "nonempty"]

Encoding = str  # "protobuf" | "json" | "cbor" | "encrypted" | "text" | "binary"


@dataclass(frozen=True)
class Decoded:
    """What a value says about the object stored under a key (identity + a field tree for diffs)."""

    encoding: Encoding
    api_version: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    owner_references: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    fields: dict[str, Any] | None = None
    error: str | None = None
    provider: str | None = None
    """Encrypted values: the encryption provider (``aescbc``, ``aesgcm``, ``secretbox``, ``kms``, …)."""
    key_name: str | None = None
    """Encrypted values: the key name from the prefix."""

    def redacted(self) -> Decoded:
        """Identity only (for secrets): ``fields`` and labels dropped; kind, name, namespace, uid kept."""
        return replace(self, fields=None, labels={})

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "encoding": self.encoding,
            "api_version": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "owner_references": [dict(o) for o in self.owner_references],
            "labels": dict(self.labels),
            "fields": self.fields,
            "error": self.error,
        }
        if self.provider is not None or self.key_name is not None:
            d["provider"] = self.provider
            d["key_name"] = self.key_name
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decoded:
        return cls(
            encoding=d["encoding"],
            api_version=d.get("api_version"),
            kind=d.get("kind"),
            namespace=d.get("namespace"),
            name=d.get("name"),
            uid=d.get("uid"),
            owner_references=[dict(o) for o in d.get("owner_references") or []],
            labels=dict(d.get("labels") or {}),
            fields=d.get("fields"),
            error=d.get("error"),
            provider=d.get("provider"),
            key_name=d.get("key_name"),
        )


def nonempty(s: Any) -> str | None:
    return s if isinstance(s, str) and s else None


def identity_from_mapping(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    labels = meta.get("labels")
    owners = meta.get("ownerReferences")
    return {
        "api_version": nonempty(obj.get("apiVersion")),
        "kind": nonempty(obj.get("kind")),
        "namespace": nonempty(meta.get("namespace")),
        "name": nonempty(meta.get("name")),
        "uid": nonempty(meta.get("uid")),
        "labels": {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        "owner_references": [dict(o) for o in owners if isinstance(o, dict)]
        if isinstance(owners, list)
        else [],
    }
