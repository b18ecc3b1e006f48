"""The etcd half of a diff: keys added / removed / modified between two :class:`EtcdState` captures.

A key counts as modified when its ``mod_revision`` or content hash changed; an entry whose
``mod_revision``, ``create_revision``, ``version`` and size are unchanged is the same etcd write and is
not hashed (two snapshots of one etcd — comparing captures of unrelated etcds is not supported).
Where both values decode,
:attr:`KeyChange.changed_fields` lists the object-level differences of ``Decoded.fields`` (computed with
``deepdiff``) as dotted paths such as ``metadata.labels.app`` or ``spec.ports[0].port``;
``metadata.managedFields…`` is summarised as ``metadata.managedFields``. It is ``None`` when a value does
not decode (encrypted, binary, secrets without ``include_secrets``). :attr:`KeyChange.values` holds the same
changes with their old and new values (:class:`~pytest_k8sstate.state.values.FieldChange`), which the text
rendering shows as ``spec.replicas: 2 → 3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from pytest_k8sstate.state.values import FieldChange, field_changes

if TYPE_CHECKING:
    from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState

__all__ = ["EtcdDiff", "FieldChange", "KeyChange", "changed_field_paths", "diff_etcd"]


@dataclass
class KeyChange:
    """One etcd key that was added, removed or modified."""

    key: str
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    changed_fields: list[str] | None = None
    """Modified keys: dotted paths that differ (``[]`` = same content rewritten; ``None`` = not decodable)."""
    values: list[FieldChange] | None = None
    """Modified keys: the changed fields with their old and new values (``None``: not computed/decodable)."""

    def change_of(self, path: str) -> FieldChange | None:
        """The change of field ``path`` (``spec.replicas``), or None when it did not change."""
        return next((c for c in self.values or () if c.path == path), None)

    @property
    def identity(self) -> str:
        """``Service default/web`` (or just the key when not decoded)."""
        if not self.kind and not self.name:
            return self.key
        who = f"{self.namespace}/{self.name}" if self.namespace else (self.name or "?")
        return f"{self.kind or '?'} {who}"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "changed_fields": None if self.changed_fields is None else list(self.changed_fields),
            "values": None if self.values is None else [c.to_json() for c in self.values],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        cf = d.get("changed_fields")
        vals = d.get("values")
        return cls(
            key=str(d["key"]),
            kind=d.get("kind"),
            namespace=d.get("namespace"),
            name=d.get("name"),
            changed_fields=None if cf is None else [str(x) for x in cf],
            values=None if vals is None else [FieldChange.from_json(v) for v in vals],
        )


@dataclass
class EtcdDiff:
    added: list[KeyChange] = field(default_factory=list)
    removed: list[KeyChange] = field(default_factory=list)
    modified: list[KeyChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [c.key for c in self.added],
            "removed": [c.key for c in self.removed],
            "modified": [c.key for c in self.modified],
            "details": {
                c.key: {"change": what, **{k: v for k, v in c.to_json().items() if k != "key"}}
                for what, changes in (
                    ("added", self.added),
                    ("removed", self.removed),
                    ("modified", self.modified),
                )
                for c in changes
            },
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Self:
        details: Mapping[str, Any] = d.get("details") or {}

        def build(what: str) -> list[KeyChange]:
            out = []
            for key in d.get(what) or []:
                det = details.get(key) or {}
                out.append(KeyChange.from_json({**det, "key": key}))
            return out

        return cls(added=build("added"), removed=build("removed"), modified=build("modified"))


def changed_field_paths(before: Any, after: Any) -> list[str]:
    """Dotted paths where two JSON-able trees differ (deepdiff), ``metadata.managedFields…`` collapsed."""
    return [c.path for c in field_changes(before, after)]


SECRETS_PREFIX = "/registry/secrets/"
REDACTED = "(redacted)"
"""What a diff shows as the old and new value of a Secret's field (its paths are shown)."""


def _key_change(key: str, entry: EtcdEntry) -> KeyChange:
    d = entry.decoded
    return KeyChange(key=key, kind=d.kind, namespace=d.namespace, name=d.name)


def diff_etcd(before: EtcdState | None, after: EtcdState | None) -> EtcdDiff:
    b = before.entries if before is not None else {}
    a = after.entries if after is not None else {}
    out = EtcdDiff()
    for key in sorted(a.keys() - b.keys()):
        out.added.append(_key_change(key, a[key]))
    for key in sorted(b.keys() - a.keys()):
        out.removed.append(_key_change(key, b[key]))
    changed = []
    for key, ea in a.items():
        eb = b.get(key)
        # the same write (same mod_revision, create_revision, version, size) is the same value: no hash
        if eb is None or eb is ea or eb.write_id() == ea.write_id():
            continue
        changed.append(key)
    for key in sorted(changed):
        eb, ea = b[key], a[key]
        if eb.mod_revision == ea.mod_revision and eb.sha256 == ea.sha256:
            continue
        ch = _key_change(key, ea)
        fb, fa = eb.decoded.fields, ea.decoded.fields
        if fb is not None and fa is not None:
            ch.values = field_changes(fb, fa)
            ch.changed_fields = [c.path for c in ch.values]
            if key.startswith(SECRETS_PREFIX):  # captured with include_secrets: still never print values
                ch.values = [FieldChange(c.path, REDACTED, REDACTED, truncated=True) for c in ch.values]
        elif eb.sha256 == ea.sha256:
            ch.changed_fields = []
        out.modified.append(ch)
    return out
