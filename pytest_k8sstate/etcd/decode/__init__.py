"""Decode etcd values written by kube-apiserver: ``decode_value(key, value) -> Decoded``. Never raises.

Formats recognised (see etcd-io/auger pkg/encoding and k8s.io/apimachinery serializers); one module each:

* ``k8s\\x00`` + protobuf ``runtime.Unknown{1: typeMeta{1: apiVersion, 2: kind}, 2: raw,
  3: contentEncoding, 4: contentType}`` → ``encoding="protobuf"``. ``fields`` is the JSON the apiserver
  serves for the object, from descriptors of every built-in type generated out of the API modules'
  ``generated.proto`` files (:mod:`.protoschema`, :mod:`.typed`; ``docs/decode.md``). Kinds the
  descriptors don't describe — or every kind when they cannot be had (one warning) — get the generic tree
  below (:mod:`.protobuf` puts them together).
* JSON objects (custom resources, ``--storage-media-type=application/json``) → ``encoding="json"``,
  ``fields`` is the object as stored.
* CBOR (self-described tag ``0xd9d9f7``, the apiserver's CBOR serializer) → ``encoding="cbor"``; decoded
  with a small CBOR reader (:mod:`.cbor`; identity and ``fields``); byte strings shown as text when they
  are UTF-8.
* ``k8s:enc:<provider>:v1:<keyname>:`` (and KMS v2's ``k8s:enc:kms:v2:<name>:``) → ``"encrypted"``;
  ``provider`` and ``key_name`` recorded, nothing else can be known without the key.
* Anything else → ``"text"`` (valid UTF-8) or ``"binary"``, with ``error`` saying so.

Errors never escape: a malformed value yields a :class:`Decoded` whose ``error`` names the key, what failed
and the byte offset (offsets are into the whole etcd value).

The generic protobuf field tree (``Decoded.fields`` of protobuf values without descriptors):

* top level: ``metadata`` (field 1, ObjectMeta with Kubernetes' JSON field names: ``name``,
  ``namespace``, ``uid``, ``labels``, ``annotations``, ``ownerReferences``, ``creationTimestamp`` as
  RFC 3339, …), fields 2 and 3 named ``spec``/``status`` — or the kind's own names for common kinds
  without spec/status (ConfigMap ``data``, EndpointSlice ``endpoints``/``ports``/``addressType``,
  Endpoints ``subsets``, …, see :data:`TOP_LEVEL_NAMES`); any other field ``"#N"``.
* the kinds in :data:`NAMED_KINDS` (Pod, Service, Endpoints, EndpointSlice, Node, Namespace, ConfigMap,
  Secret, Lease, Deployment, ReplicaSet, DaemonSet) are named below that too, after a small schema of
  the fields tests look at (numbers from k8s.io/api generated.proto): the same shape as the JSON the
  apiserver serves — repeated fields always lists, maps dicts, times RFC 3339, IntOrString int or str —
  except that zero values the apiserver's protobuf encoder writes (``"nodePort": 0``, ``"hostname": ""``)
  are kept. Fields outside that schema keep their number (``"#N"``).
* elsewhere the schema is unknown: every field is ``"#N"`` (its number); a field seen more than once
  becomes a list (so a repeated field with one element looks like a singular one).
* wire types: varint → int; fixed32/fixed64 → int (unsigned; doubles are not guessed);
  length-delimited → a nested message when the bytes contain a control byte (< 0x20 or 0x7f — every real
  nested message does: tag ``0x0a``, small lengths) and parse *exactly* as wire format; else a string
  when they are valid UTF-8; else ``"base64:…"``. Empty → ``""``. Nesting deeper than :data:`MAX_DEPTH`
  is not expanded. Groups (wire types 3/4, unused by Kubernetes) make a parse fail.
"""

from __future__ import annotations

import json

from pytest_k8sstate.etcd.decode.cbor import CBOR_PREFIX, decode_cbor
from pytest_k8sstate.etcd.decode.protobuf import PROTO_PREFIX, active_schema, decode_protobuf, schema_problem
from pytest_k8sstate.etcd.decode.result import Decoded, identity_from_mapping
from pytest_k8sstate.etcd.decode.schema import TOP_LEVEL_NAMES
from pytest_k8sstate.etcd.decode.wire import MAX_DEPTH, WireError, wire_tree

__all__ = [
    "MAX_DEPTH",
    "TOP_LEVEL_NAMES",
    "Decoded",
    "WireError",
    "active_schema",
    "decode_value",
    "schema_problem",
    "wire_tree",
]

ENC_PREFIX = b"k8s:enc:"


def _decode_json(key: str, value: bytes) -> Decoded:
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError) as exc:
        pos = getattr(exc, "pos", None)
        at = f" at byte offset {pos}" if isinstance(pos, int) else ""
        msg = getattr(exc, "msg", str(exc))
        return _decode_other(key, value, f"{key}: value starts like JSON but does not parse: {msg}{at}")
    if not isinstance(obj, dict):
        return Decoded("json", fields={"value": obj}, error=f"{key}: JSON value is not an object")
    return Decoded("json", fields=obj, **identity_from_mapping(obj))


def _decode_encrypted(key: str, value: bytes) -> Decoded:
    # k8s:enc:<provider>:v1:<keyname>:<ciphertext>   (kms v2: k8s:enc:kms:v2:<name>:<ciphertext>)
    rest = value[len(ENC_PREFIX) :]
    parts = rest.split(b":", 3)
    provider = parts[0].decode("utf-8", "replace") if parts and parts[0] else None
    key_name = parts[2].decode("utf-8", "replace") if len(parts) >= 4 else None
    err = None
    if provider is None or len(parts) < 4:
        err = f"{key}: encrypted value with an unexpected prefix (expected k8s:enc:<provider>:v1:<key>:)"
    return Decoded("encrypted", provider=provider, key_name=key_name, error=err)


def _decode_other(key: str, value: bytes, why: str | None = None) -> Decoded:
    try:
        value.decode("utf-8")
        enc = "text"
    except UnicodeDecodeError as exc:
        enc = "binary"
        why = why or f"{key}: not a Kubernetes object (invalid UTF-8 at byte offset {exc.start})"
    if why is None:
        why = f"{key}: not a Kubernetes object (no k8s\\x00 protobuf prefix, not JSON, CBOR or k8s:enc:)"
    return Decoded(enc, error=why)


def decode_value(key: str | bytes, value: bytes) -> Decoded:
    """Decode one etcd value stored under ``key``. Never raises; problems go into ``Decoded.error``."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "backslashreplace")
    try:
        value = bytes(value)
        if value.startswith(PROTO_PREFIX):
            return decode_protobuf(key, value)
        if value.startswith(ENC_PREFIX):
            return _decode_encrypted(key, value)
        if value.startswith(CBOR_PREFIX):
            return decode_cbor(key, value)
        if value.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
            return _decode_json(key, value)
        if not value:
            return Decoded("binary", error=f"{key}: empty value")
        return _decode_other(key, value)
    except Exception as exc:  # the contract is "never raises"; report instead
        return Decoded("binary", error=f"{key}: internal decoder error {type(exc).__name__}: {exc}")
