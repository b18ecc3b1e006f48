"""ObjectMeta and the ``runtime.Unknown`` envelope as protobuf message classes built from descriptors.

The descriptors (a subset of k8s.io/apimachinery's generated.proto) are built at import time with the
``protobuf`` library: no protoc, no generated code. :func:`meta_dict` turns a parsed ObjectMeta into the
JSON shape the apiserver serves (``omitempty`` like its JSON, times RFC 3339).
"""

from __future__ import annotations

import datetime
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "META_NAMED",
    "ObjectMetaPB",
    "ObjectPB",
    "OwnerReferencePB",
    "TimePB",
    "TypeMetaPB",
    "UnknownPB",
    "meta_dict",
    "owner_ref",
    "pairs",
    "rfc3339",
    "text",
]

_F = descriptor_pb2.FieldDescriptorProto

# Kubernetes strings are declared ``bytes`` (``s``) here: invalid UTF-8 then never fails a parse or an
# attribute access; :func:`text` decodes them (backslashreplace). Maps are declared as repeated entry
# messages (same wire format) because bytes can't be map keys. "N name type" per field, "*N" = repeated;
# a type that is not a scalar below names a message of this table.
_SCALARS = {
    "s": _F.TYPE_BYTES,
    "b": _F.TYPE_BYTES,
    "i64": _F.TYPE_INT64,
    "i32": _F.TYPE_INT32,
    "bool": _F.TYPE_BOOL,
}
_MESSAGES: dict[str, str] = {
    "TypeMeta": "1 apiVersion s; 2 kind s",
    "Unknown": "1 typeMeta TypeMeta; 2 raw b; 3 contentEncoding s; 4 contentType s",
    "Time": "1 seconds i64; 2 nanos i32",
    "OwnerReference": "1 kind s; 3 name s; 4 uid s; 5 apiVersion s; 6 controller bool; "
    "7 blockOwnerDeletion bool",
    "StringEntry": "1 key s; 2 value s",
    "FieldsV1": "1 Raw b",
    "ManagedFieldsEntry": "1 manager s; 2 operation s; 3 apiVersion s; 4 time Time; 6 fieldsType s; "
    "7 fieldsV1 FieldsV1; 8 subresource s",
    "ObjectMeta": "1 name s; 2 generateName s; 3 namespace s; 4 selfLink s; 5 uid s; 6 resourceVersion s; "
    "7 generation i64; 8 creationTimestamp Time; 9 deletionTimestamp Time; "
    "10 deletionGracePeriodSeconds i64; *11 labels StringEntry; *12 annotations StringEntry; "
    "*13 ownerReferences OwnerReference; *14 finalizers s; *17 managedFields ManagedFieldsEntry",
    "Object": "1 metadata ObjectMeta",  # any top-level kind: field 1 is ObjectMeta
}


def _build_classes() -> dict[str, type[Message]]:
    fdp = descriptor_pb2.FileDescriptorProto()
    fdp.name = "pytest_k8sstate/k8s_subset.proto"
    fdp.package = "k8ssubset"
    fdp.syntax = "proto2"  # like go-to-protobuf's output
    for msg_name, spec in _MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        for item in spec.split(";"):
            num, name, typ = item.split()
            f = msg.field.add(name=name, number=int(num.lstrip("*")))
            f.label = _F.LABEL_REPEATED if num.startswith("*") else _F.LABEL_OPTIONAL
            if typ in _SCALARS:
                f.type = _SCALARS[typ]
            else:
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".k8ssubset.{typ}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"k8ssubset.{name}"))
        for name in ("Unknown", "Object", "ObjectMeta", "OwnerReference", "TypeMeta", "Time")
    }


_CLASSES = _build_classes()
UnknownPB = _CLASSES["Unknown"]
ObjectPB = _CLASSES["Object"]
ObjectMetaPB = _CLASSES["ObjectMeta"]
OwnerReferencePB = _CLASSES["OwnerReference"]
TypeMetaPB = _CLASSES["TypeMeta"]
TimePB = _CLASSES["Time"]

#: Field numbers of ObjectMeta named by the descriptor above (the rest of ObjectMeta stays "#N").
META_NAMED = frozenset(int(item.split()[0].lstrip("*")) for item in _MESSAGES["ObjectMeta"].split(";"))


def text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def pairs(entries: Any) -> dict[str, str]:
    return {text(e.key): text(e.value) for e in entries}


def rfc3339(seconds: int, nanos: int = 0) -> str:
    try:
        dt = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        s += f".{nanos:09d}".rstrip("0")
    return s + "Z"


def owner_ref(o: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "apiVersion": text(o.apiVersion),
        "kind": text(o.kind),
        "name": text(o.name),
        "uid": text(o.uid),
    }
    if o.HasField("controller"):
        d["controller"] = o.controller
    if o.HasField("blockOwnerDeletion"):
        d["blockOwnerDeletion"] = o.blockOwnerDeletion
    return d


def meta_dict(meta: Message, generic: dict[str, Any]) -> dict[str, Any]:
    """ObjectMeta with JSON names; fields the descriptor doesn't know stay ``#N`` from the generic tree."""
    m: Any = meta
    d: dict[str, Any] = {}
    # The apiserver's encoder writes every non-pointer field; like its JSON (omitempty) drop "" and 0.
    for name in ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion"):
        value = getattr(m, name)
        if value:
            d[name] = text(value)
    if m.generation:
        d["generation"] = m.generation
    for name in ("creationTimestamp", "deletionTimestamp"):
        if meta.HasField(name):
            t = getattr(m, name)
            d[name] = rfc3339(t.seconds, t.nanos)
    if meta.HasField("deletionGracePeriodSeconds"):
        d["deletionGracePeriodSeconds"] = m.deletionGracePeriodSeconds
    if len(m.labels):
        d["labels"] = pairs(m.labels)
    if len(m.annotations):
        d["annotations"] = pairs(m.annotations)
    if len(m.ownerReferences):
        d["ownerReferences"] = [owner_ref(o) for o in m.ownerReferences]
    if len(m.finalizers):
        d["finalizers"] = [text(f) for f in m.finalizers]
    if len(m.managedFields):
        d["managedFields"] = [_managed_entry(e) for e in m.managedFields]
    for k, v in generic.items():
        if int(k[1:]) not in META_NAMED:
            d[k] = v
    return d


def _managed_entry(e: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for name in ("manager", "operation", "apiVersion"):
        if getattr(e, name):
            d[name] = text(getattr(e, name))
    if e.HasField("time"):
        d["time"] = rfc3339(e.time.seconds, e.time.nanos)
    if e.fieldsType:
        d["fieldsType"] = text(e.fieldsType)
    if e.HasField("fieldsV1"):
        d["fieldsV1"] = text(e.fieldsV1.Raw)
    if e.subresource:
        d["subresource"] = text(e.subresource)
    return d
