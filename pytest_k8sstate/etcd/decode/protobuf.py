"""Decode ``k8s\\x00`` + protobuf ``runtime.Unknown`` values: identity and a named field tree.

The envelope and ObjectMeta go through the descriptor-built classes (:mod:`.meta`), the rest of the object
through the generic wire tree (:mod:`.wire`), renamed after :mod:`.schema` where it knows the kind.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.unknown_fields import UnknownFieldSet  # type: ignore[import-untyped, unused-ignore]

from pytest_k8sstate.etcd.decode.meta import ObjectPB, UnknownPB, meta_dict, owner_ref, pairs, text
from pytest_k8sstate.etcd.decode.result import Decoded, nonempty
from pytest_k8sstate.etcd.decode.schema import DEFAULT_TOP, NAMED_KINDS, SCHEMAS, TOP_LEVEL_NAMES, named
from pytest_k8sstate.etcd.decode.wire import MAX_DEPTH, Span, WireError, parse_message, span_value

__all__ = ["PROTO_PREFIX", "decode_protobuf"]

PROTO_PREFIX = b"k8s\x00"


def decode_protobuf(key: str, value: bytes) -> Decoded:
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
    schema = SCHEMAS[kind] if kind in NAMED_KINDS else {}
    named_fields = named({k: v for k, v in tree.items() if k != "#1"}, kind) if schema and kind else {}
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
        elif k in schema:
            name = schema[k][0]
            fields[name] = named_fields[name]
        elif num in top_names:
            fields[top_names[num]] = v
        else:
            fields[k] = v
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
        error=meta_err,
    )
