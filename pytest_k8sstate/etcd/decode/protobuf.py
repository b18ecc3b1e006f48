"""Decode ``k8s\\x00`` + protobuf ``runtime.Unknown`` values: identity and a named field tree.

The envelope and ObjectMeta go through the descriptor-built classes (:mod:`.meta`). The object itself is
decoded with the descriptors of every built-in type (:mod:`.protoschema`, :mod:`.typed`) into the JSON the
apiserver serves; a kind they don't describe (or when they can't be had: one warning, :func:`active_schema`)
falls back to the generic wire tree (:mod:`.wire`), renamed after :mod:`.schema` where it knows the kind.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.unknown_fields import UnknownFieldSet  # type: ignore[import-untyped, unused-ignore]

from pytest_k8sstate.errors import K8sStateError
from pytest_k8sstate.etcd.decode.meta import ObjectPB, UnknownPB, meta_dict, owner_ref, pairs, text
from pytest_k8sstate.etcd.decode.result import Decoded, nonempty
from pytest_k8sstate.etcd.decode.schema import DEFAULT_TOP, NAMED_KINDS, SCHEMAS, TOP_LEVEL_NAMES, named
from pytest_k8sstate.etcd.decode.typed import Compiled, decode_typed
from pytest_k8sstate.etcd.decode.wire import MAX_DEPTH, Span, WireError, parse_message, span_value

__all__ = ["PROTO_PREFIX", "active_schema", "decode_protobuf", "schema_problem"]

PROTO_PREFIX = b"k8s\x00"
VERSION_ENV = "K8SSTATE_KUBERNETES_VERSION"
_ACTIVE: dict[str, Compiled | None] = {}
_PROBLEM: dict[str, str] = {}
_ACTIVE_LOCK = threading.Lock()


def active_schema() -> Compiled | None:
    """The compiled descriptors of the resolved Kubernetes version (loaded or generated once per process);
    None, with one warning naming the cause and the fix, when they cannot be had."""
    ver = os.environ.get(VERSION_ENV, "")
    try:
        return _ACTIVE[ver]
    except KeyError:
        pass
    from pytest_k8sstate.etcd.decode.protoschema import load_schema

    with _ACTIVE_LOCK:
        if ver in _ACTIVE:
            return _ACTIVE[ver]
        compiled: Compiled | None
        try:
            compiled = Compiled(load_schema())
        except K8sStateError as exc:
            compiled = None
            _PROBLEM[ver] = str(exc)
            warnings.warn(f"pytest-k8sstate: {exc}", RuntimeWarning, stacklevel=2)
        _ACTIVE[ver] = compiled
        return compiled


def schema_problem() -> str | None:
    """Why :func:`active_schema` is None (the message it warned with), else None."""
    return _PROBLEM.get(os.environ.get(VERSION_ENV, ""))


class _Default:
    pass


_DEFAULT: Any = _Default()


def decode_protobuf(key: str, value: bytes, schema: Compiled | None = _DEFAULT) -> Decoded:
    """Decode one ``k8s\\x00`` value; ``schema`` None: the generic decoder (no descriptors)."""
    body = value[len(PROTO_PREFIX) :]
    base = len(PROTO_PREFIX)
    env: Any = UnknownPB()
    try:
        env.ParseFromString(body)
    except DecodeError:
        try:
            parse_message(body, 0, len(body), MAX_DEPTH)
            where = "invalid field contents"
        except WireError as exc:
            where = f"{exc.what} at byte offset {base + exc.offset}"
        return Decoded("protobuf", error=f"{key}: malformed protobuf envelope (runtime.Unknown): {where}")
    api_version = text(env.typeMeta.apiVersion) or None
    kind = text(env.typeMeta.kind) or None
    raw: bytes = env.raw
    content_encoding, content_type = text(env.contentEncoding), text(env.contentType)
    if content_encoding or (content_type and content_type != "application/vnd.kubernetes.protobuf"):
        return Decoded(
            "protobuf",
            api_version=api_version,
            kind=kind,
            error=f"{key}: envelope content encoding {content_encoding!r} / type {content_type!r} "
            "is not plain protobuf; object not decoded",
        )
    if schema is _DEFAULT:
        schema = active_schema()
    compiled: Compiled | None = schema
    msg = compiled.lookup(api_version, kind) if compiled is not None else None
    if compiled is not None and msg is not None:
        try:
            typed = decode_typed(compiled, msg, raw)
        except WireError:
            pass  # the generic path below names the offset
        else:
            return _identity(key, api_version, kind, raw, {"apiVersion": api_version, "kind": kind, **typed})
    raw_at = body.find(raw) + base if raw else base  # offset of raw within the value (for messages)
    try:
        tree = parse_message(raw, 0, len(raw), 1, lazy=1)  # ObjectMeta: decoded by the protobuf library below
    except WireError as exc:
        return Decoded(
            "protobuf",
            api_version=api_version,
            kind=kind,
            error=f"{key}: malformed object in envelope: {exc.what} at byte offset {raw_at + exc.offset}",
        )
    obj: Any = ObjectPB()
    meta_err: str | None = None
    try:
        obj.ParseFromString(raw)
    except DecodeError as exc:
        meta_err = f"{key}: ObjectMeta (field 1) does not decode: {exc}"
        obj = ObjectPB()
    meta = obj.metadata
    top_names = TOP_LEVEL_NAMES.get(kind or "", DEFAULT_TOP)
    fields: dict[str, Any] = {}
    table = SCHEMAS[kind] if kind in NAMED_KINDS else {}
    named_fields = named({k: v for k, v in tree.items() if k != "#1"}, kind) if table and kind else {}
    for k, v in tree.items():
        num = int(k[1:])
        if num == 1:
            if meta_err is None and isinstance(v, Span):
                extra: dict[str, Any] = {}
                if len(UnknownFieldSet(meta)):  # ObjectMeta fields the descriptor doesn't name
                    generic = span_value(raw, v.start, v.end)
                    extra = generic if isinstance(generic, dict) else {}
                fields["metadata"] = meta_dict(meta, extra)
            else:
                spans = v if isinstance(v, list) else [v]
                vals = [span_value(raw, x.start, x.end) if isinstance(x, Span) else x for x in spans]
                fields["#1"] = vals if isinstance(v, list) else vals[0]
        elif k in table:
            name = table[k][0]
            fields[name] = named_fields[name]
        elif num in top_names:
            fields[top_names[num]] = v
        else:
            fields[k] = v
    return _from_meta(meta, api_version, kind, fields, meta_err)


def _identity(
    key: str, api_version: str | None, kind: str | None, raw: bytes, fields: dict[str, Any]
) -> Decoded:
    meta_json = fields.get("metadata")
    # ObjectMeta's JSON names have no "#": one there is a field the descriptors don't know (a "#N" key)
    if isinstance(meta_json, dict) and "#" not in "".join(meta_json):
        labels = meta_json.get("labels")
        owners = meta_json.get("ownerReferences")
        return Decoded(
            "protobuf",
            api_version=api_version,
            kind=kind,
            namespace=nonempty(meta_json.get("namespace")),
            name=nonempty(meta_json.get("name")),
            uid=nonempty(meta_json.get("uid")),
            owner_references=[dict(o) for o in owners if isinstance(o, dict)]
            if isinstance(owners, list)
            else [],
            labels=dict(labels) if isinstance(labels, dict) else {},
            fields=fields,
        )
    obj: Any = ObjectPB()
    err: str | None = None
    try:
        obj.ParseFromString(raw)
    except DecodeError as exc:
        err = f"{key}: ObjectMeta (field 1) does not decode: {exc}"
        obj = ObjectPB()
    meta = obj.metadata
    return _from_meta(meta, api_version, kind, fields, err)


def _from_meta(
    meta: Any, api_version: str | None, kind: str | None, fields: dict[str, Any], error: str | None
) -> Decoded:
    """A protobuf value's :class:`Decoded`: identity from its ObjectMeta, ``fields`` as decoded."""
    return Decoded(
        "protobuf",
        api_version=api_version,
        kind=kind,
        namespace=nonempty(text(meta.namespace)),
        name=nonempty(text(meta.name)),
        uid=nonempty(text(meta.uid)),
        owner_references=[owner_ref(o) for o in meta.ownerReferences],
        labels=pairs(meta.labels),
        fields=fields,
        error=error,
    )
