"""Decode etcd values written by kube-apiserver: ``decode_value(key, value) -> Decoded``. Never raises.

Formats recognised (see etcd-io/auger pkg/encoding and k8s.io/apimachinery serializers):

* ``k8s\\x00`` + protobuf ``runtime.Unknown{1: typeMeta{1: apiVersion, 2: kind}, 2: raw,
  3: contentEncoding, 4: contentType}`` → ``encoding="protobuf"``. The envelope and the object's
  ``ObjectMeta`` (field 1 of ``raw``) are decoded with the ``protobuf`` library from descriptors built at
  import time (no protoc, no generated code). ``fields`` is a generic tree of ``raw`` (below).
* JSON objects (custom resources, ``--storage-media-type=application/json``) → ``encoding="json"``,
  ``fields`` is the object as stored.
* CBOR (self-described tag ``0xd9d9f7``, the apiserver's CBOR serializer) → ``encoding="cbor"``; decoded
  with a small CBOR reader (identity and ``fields``); byte strings shown as text when they are UTF-8.
* ``k8s:enc:<provider>:v1:<keyname>:`` (and KMS v2's ``k8s:enc:kms:v2:<name>:``) → ``"encrypted"``;
  ``provider`` and ``key_name`` recorded, nothing else can be known without the key.
* Anything else → ``"text"`` (valid UTF-8) or ``"binary"``, with ``error`` saying so.

Errors never escape: a malformed value yields a :class:`Decoded` whose ``error`` names the key, what failed
and the byte offset (offsets are into the whole etcd value).

The protobuf field tree (``Decoded.fields`` for protobuf values):

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

import base64
import datetime
import functools
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.unknown_fields import UnknownFieldSet  # type: ignore[import-untyped, unused-ignore]

__all__ = ["MAX_DEPTH", "TOP_LEVEL_NAMES", "Decoded", "decode_value", "wire_tree"]

PROTO_PREFIX = b"k8s\x00"
CBOR_PREFIX = b"\xd9\xd9\xf7"
ENC_PREFIX = b"k8s:enc:"
MAX_DEPTH = 64

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


# --------------------------------------------------------------------------------------------------
# protobuf descriptors (a subset of k8s.io/apimachinery's generated.proto), built at runtime
# --------------------------------------------------------------------------------------------------
_F = descriptor_pb2.FieldDescriptorProto


def _add_field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: Any,
    *,
    type_name: str | None = None,
    repeated: bool = False,
) -> None:
    f = msg.field.add()
    f.name = name
    f.number = number
    f.type = ftype
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        f.type_name = type_name


def _build_classes() -> dict[str, type[Message]]:
    fdp = descriptor_pb2.FileDescriptorProto()
    fdp.name = "pytest_k8sstate/k8s_subset.proto"
    fdp.package = "k8ssubset"
    fdp.syntax = "proto2"  # like go-to-protobuf's output
    # Kubernetes strings are declared ``bytes`` here: invalid UTF-8 then never fails a parse or an
    # attribute access; :func:`_s` decodes them (backslashreplace). Maps are declared as repeated entry
    # messages (same wire format) because bytes can't be map keys.
    S, B, I64, I32, BOOL, M = (
        _F.TYPE_BYTES,
        _F.TYPE_BYTES,
        _F.TYPE_INT64,
        _F.TYPE_INT32,
        _F.TYPE_BOOL,
        _F.TYPE_MESSAGE,
    )

    tm = fdp.message_type.add(name="TypeMeta")
    _add_field(tm, "apiVersion", 1, S)
    _add_field(tm, "kind", 2, S)

    unk = fdp.message_type.add(name="Unknown")
    _add_field(unk, "typeMeta", 1, M, type_name=".k8ssubset.TypeMeta")
    _add_field(unk, "raw", 2, B)
    _add_field(unk, "contentEncoding", 3, S)
    _add_field(unk, "contentType", 4, S)

    t = fdp.message_type.add(name="Time")
    _add_field(t, "seconds", 1, I64)
    _add_field(t, "nanos", 2, I32)

    oref = fdp.message_type.add(name="OwnerReference")
    _add_field(oref, "kind", 1, S)
    _add_field(oref, "name", 3, S)
    _add_field(oref, "uid", 4, S)
    _add_field(oref, "apiVersion", 5, S)
    _add_field(oref, "controller", 6, BOOL)
    _add_field(oref, "blockOwnerDeletion", 7, BOOL)

    om = fdp.message_type.add(name="ObjectMeta")
    for mapname in ("LabelsEntry", "AnnotationsEntry"):
        entry = om.nested_type.add(name=mapname)
        _add_field(entry, "key", 1, S)
        _add_field(entry, "value", 2, S)
    _add_field(om, "name", 1, S)
    _add_field(om, "generateName", 2, S)
    _add_field(om, "namespace", 3, S)
    _add_field(om, "selfLink", 4, S)
    _add_field(om, "uid", 5, S)
    _add_field(om, "resourceVersion", 6, S)
    _add_field(om, "generation", 7, I64)
    _add_field(om, "creationTimestamp", 8, M, type_name=".k8ssubset.Time")
    _add_field(om, "deletionTimestamp", 9, M, type_name=".k8ssubset.Time")
    _add_field(om, "deletionGracePeriodSeconds", 10, I64)
    _add_field(om, "labels", 11, M, type_name=".k8ssubset.ObjectMeta.LabelsEntry", repeated=True)
    _add_field(om, "annotations", 12, M, type_name=".k8ssubset.ObjectMeta.AnnotationsEntry", repeated=True)
    _add_field(om, "ownerReferences", 13, M, type_name=".k8ssubset.OwnerReference", repeated=True)
    _add_field(om, "finalizers", 14, S, repeated=True)

    fv1 = fdp.message_type.add(name="FieldsV1")
    _add_field(fv1, "Raw", 1, B)
    mfe = fdp.message_type.add(name="ManagedFieldsEntry")
    _add_field(mfe, "manager", 1, S)
    _add_field(mfe, "operation", 2, S)
    _add_field(mfe, "apiVersion", 3, S)
    _add_field(mfe, "time", 4, M, type_name=".k8ssubset.Time")
    _add_field(mfe, "fieldsType", 6, S)
    _add_field(mfe, "fieldsV1", 7, M, type_name=".k8ssubset.FieldsV1")
    _add_field(mfe, "subresource", 8, S)
    _add_field(om, "managedFields", 17, M, type_name=".k8ssubset.ManagedFieldsEntry", repeated=True)

    obj = fdp.message_type.add(name="Object")  # any top-level kind: field 1 is ObjectMeta
    _add_field(obj, "metadata", 1, M, type_name=".k8ssubset.ObjectMeta")

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

# Field numbers of ObjectMeta named by the descriptor above (the rest of ObjectMeta stays "#N").
_META_NAMED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17}

#: Top-level field names for kinds whose fields 2.. are not ``spec``/``status``.
TOP_LEVEL_NAMES: dict[str, dict[int, str]] = {
    "ConfigMap": {2: "data", 3: "binaryData", 4: "immutable"},
    "Secret": {2: "data", 3: "type", 4: "stringData", 5: "immutable"},
    "Endpoints": {2: "subsets"},
    "EndpointSlice": {2: "endpoints", 3: "ports", 4: "addressType"},
    "ServiceAccount": {2: "secrets", 3: "imagePullSecrets", 4: "automountServiceAccountToken"},
    "Role": {2: "rules"},
    "ClusterRole": {2: "rules", 3: "aggregationRule"},
    "RoleBinding": {2: "subjects", 3: "roleRef"},
    "ClusterRoleBinding": {2: "subjects", 3: "roleRef"},
    "RangeAllocation": {2: "range", 3: "data"},
    "PriorityClass": {2: "value", 3: "globalDefault", 4: "description", 5: "preemptionPolicy"},
    "StorageClass": {
        2: "provisioner",
        3: "parameters",
        4: "reclaimPolicy",
        5: "mountOptions",
        6: "allowVolumeExpansion",
        7: "volumeBindingMode",
        8: "allowedTopologies",
    },
    "Event": {
        2: "involvedObject",
        3: "reason",
        4: "message",
        5: "source",
        6: "firstTimestamp",
        7: "lastTimestamp",
        8: "count",
        9: "type",
        10: "eventTime",
        11: "series",
        12: "action",
        13: "related",
        14: "reportingComponent",
        15: "reportingInstance",
    },
    "ControllerRevision": {2: "data", 3: "revision"},
}
_DEFAULT_TOP = {2: "spec", 3: "status"}


# --------------------------------------------------------------------------------------------------
# generic protobuf wire tree
# --------------------------------------------------------------------------------------------------
class WireError(Exception):
    """Malformed wire format at ``offset`` (relative to the buffer given to the parser)."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"{what} at byte offset {offset}")
        self.offset = offset
        self.what = what


def _b64(b: bytes) -> str:
    return "base64:" + base64.b64encode(b).decode("ascii")


_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_search_control = _CONTROL.search
_KEYS = [f"#{n}" for n in range(256)]


def _varint(buf: bytes, i: int, end: int, what: str) -> tuple[int, int]:
    """Decode a varint starting at ``i`` → (value, next index)."""
    at = i
    v = 0
    shift = 0
    while True:
        if i >= end:
            raise WireError(at, f"truncated {what}")
        c = buf[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise WireError(at, f"{what} varint longer than 10 bytes")


class _Span:
    """A length-delimited field left unexpanded (``lazy=`` of :func:`_message`)."""

    __slots__ = ("end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end


def _span_value(buf: bytes, s: int, e: int) -> Any:
    """What :func:`_message` makes of the length-delimited bytes ``buf[s:e]`` (see module doc)."""
    if s == e:
        return ""
    if _search_control(buf, s, e) is not None:
        try:
            return _message(buf, s, e, 2)
        except WireError:
            pass
    chunk = buf[s:e]
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return _b64(chunk)


def _message(buf: bytes, i: int, end: int, depth: int, lazy: int = 0) -> dict[str, Any]:
    """Parse ``buf[i:end]`` as one message into a ``{"#N": value}`` tree (see module doc).

    Field number ``lazy`` (length-delimited) is not expanded but returned as a :class:`_Span`.
    Raises :class:`WireError` (offset relative to ``buf``) unless the bytes are exact wire format.
    """
    out: dict[str, Any] = {}
    repeated: set[str] | None = None
    while i < end:
        tag_at = i
        c = buf[i]
        if c < 0x80:
            tag = c
            i += 1
        else:
            tag, i = _varint(buf, i, end, "field tag")
        num = tag >> 3
        wt = tag & 7
        if num == 0 or num > 0x1FFFFFFF:
            raise WireError(tag_at, f"invalid field number {num}")
        val: Any
        if wt == 2:
            if i < end and buf[i] < 0x80:
                n = buf[i]
                i += 1
            else:
                n, i = _varint(buf, i, end, f"length of field {num}")
            if n > end - i:
                raise WireError(tag_at, f"length {n} of field {num} runs past the end ({end - i} bytes left)")
            s = i
            i += n
            if num == lazy:
                val = _Span(s, i)
            elif n == 0:
                val = ""
            else:
                val = None
                if depth < MAX_DEPTH and _search_control(buf, s, i) is not None:
                    try:
                        val = _message(buf, s, i, depth + 1)
                    except WireError:
                        val = None
                if val is None:
                    chunk = buf[s:i]
                    try:
                        val = chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        val = _b64(chunk)
        elif wt == 0:
            if i < end and buf[i] < 0x80:
                val = buf[i]
                i += 1
            else:
                val, i = _varint(buf, i, end, f"varint of field {num}")
                if val >= 1 << 63:  # int64 stored as two's complement
                    val -= 1 << 64
        elif wt == 1:
            if i + 8 > end:
                raise WireError(i, f"truncated fixed64 of field {num}")
            val = int.from_bytes(buf[i : i + 8], "little")
            i += 8
        elif wt == 5:
            if i + 4 > end:
                raise WireError(i, f"truncated fixed32 of field {num}")
            val = int.from_bytes(buf[i : i + 4], "little")
            i += 4
        else:
            raise WireError(tag_at, f"unsupported wire type {wt} (field {num})")
        k = _KEYS[num] if num < 256 else f"#{num}"
        if k in out:
            if repeated is not None and k in repeated:
                out[k].append(val)
            else:
                out[k] = [out[k], val]
                if repeated is None:
                    repeated = set()
                repeated.add(k)
        else:
            out[k] = val
    return out


def wire_tree(data: bytes) -> dict[str, Any]:
    """Generic ``{"#N": value}`` tree of a protobuf message; raises :class:`WireError` when malformed."""
    return _message(data, 0, len(data), 1)


# --------------------------------------------------------------------------------------------------
# named fields for the kinds tests assert on most (field numbers from k8s.io/api generated.proto)
# --------------------------------------------------------------------------------------------------
# "N name type" per field; "*N" = repeated. Types: s string, i int, b bool, t Time/MicroTime (RFC 3339),
# ios IntOrString, map map<string,string>, qmap map<string,Quantity>, M:<Message> a message below.
_SCHEMA_TEXT: dict[str, str] = {
    "ObjectMeta": "1 name s; 2 generateName s; 3 namespace s; 5 uid s; 7 generation i; "
    "8 creationTimestamp t; 11 labels map; 12 annotations map; *14 finalizers s",
    "ObjectReference": "1 kind s; 2 namespace s; 3 name s; 4 uid s; 5 apiVersion s; 6 resourceVersion s; "
    "7 fieldPath s",
    "LabelSelector": "1 matchLabels map; *2 matchExpressions M:LabelSelectorRequirement",
    "LabelSelectorRequirement": "1 key s; 2 operator s; *3 values s",
    "PodTemplateSpec": "1 metadata M:ObjectMeta; 2 spec M:PodSpec",
    "Pod": "2 spec M:PodSpec; 3 status M:PodStatus",
    "PodSpec": "*2 containers M:Container; 3 restartPolicy s; 4 terminationGracePeriodSeconds i; "
    "6 dnsPolicy s; 7 nodeSelector map; 8 serviceAccountName s; 10 nodeName s; 11 hostNetwork b; "
    "16 hostname s; 17 subdomain s; 19 schedulerName s; *20 initContainers M:Container; "
    "*22 tolerations M:Toleration; 24 priorityClassName s; 25 priority i; 30 enableServiceLinks b; "
    "31 preemptionPolicy s",
    "Container": "1 name s; 2 image s; *3 command s; *4 args s; 5 workingDir s; *6 ports M:ContainerPort; "
    "*7 env M:EnvVar; 8 resources M:ResourceRequirements; 13 terminationMessagePath s; "
    "14 imagePullPolicy s; 20 terminationMessagePolicy s",
    "ContainerPort": "1 name s; 2 hostPort i; 3 containerPort i; 4 protocol s; 5 hostIP s",
    "EnvVar": "1 name s; 2 value s",
    "ResourceRequirements": "1 limits qmap; 2 requests qmap",
    "Toleration": "1 key s; 2 operator s; 3 value s; 4 effect s; 5 tolerationSeconds i",
    "PodStatus": "1 phase s; *2 conditions M:PodCondition; 3 message s; 4 reason s; 5 hostIP s; 6 podIP s; "
    "7 startTime t; *8 containerStatuses M:ContainerStatus; 9 qosClass s; 11 nominatedNodeName s; "
    "*12 podIPs M:PodIP; *16 hostIPs M:PodIP; 17 observedGeneration i",
    "PodCondition": "1 type s; 2 status s; 3 lastProbeTime t; 4 lastTransitionTime t; 5 reason s; "
    "6 message s",
    "PodIP": "1 ip s",
    "ContainerStatus": "1 name s; 4 ready b; 5 restartCount i; 6 image s; 7 imageID s; 8 containerID s; "
    "9 started b",
    "Service": "2 spec M:ServiceSpec; 3 status M:ServiceStatus",
    "ServiceSpec": "*1 ports M:ServicePort; 2 selector map; 3 clusterIP s; 4 type s; *5 externalIPs s; "
    "7 sessionAffinity s; 8 loadBalancerIP s; 10 externalName s; 11 externalTrafficPolicy s; "
    "12 healthCheckNodePort i; 13 publishNotReadyAddresses b; 17 ipFamilyPolicy s; *18 clusterIPs s; "
    "*19 ipFamilies s; 20 allocateLoadBalancerNodePorts b; 22 internalTrafficPolicy s; "
    "23 trafficDistribution s",
    "ServicePort": "1 name s; 2 protocol s; 3 port i; 4 targetPort ios; 5 nodePort i; 6 appProtocol s",
    "ServiceStatus": "1 loadBalancer M:LoadBalancerStatus",
    "LoadBalancerStatus": "*1 ingress M:LoadBalancerIngress",
    "LoadBalancerIngress": "1 ip s; 2 hostname s; 3 ipMode s",
    "Endpoints": "*2 subsets M:EndpointSubset",
    "EndpointSubset": "*1 addresses M:EndpointAddress; *2 notReadyAddresses M:EndpointAddress; "
    "*3 ports M:CoreEndpointPort",
    "EndpointAddress": "1 ip s; 2 targetRef M:ObjectReference; 3 hostname s; 4 nodeName s",
    "CoreEndpointPort": "1 name s; 2 port i; 3 protocol s; 4 appProtocol s",
    "EndpointSlice": "*2 endpoints M:Endpoint; *3 ports M:EndpointPort; 4 addressType s",
    "Endpoint": "*1 addresses s; 2 conditions M:EndpointConditions; 3 hostname s; "
    "4 targetRef M:ObjectReference; 6 nodeName s; 7 zone s",
    "EndpointConditions": "1 ready b; 2 serving b; 3 terminating b",
    "EndpointPort": "1 name s; 2 protocol s; 3 port i; 4 appProtocol s",
    "Node": "2 spec M:NodeSpec; 3 status M:NodeStatus",
    "NodeSpec": "1 podCIDR s; 3 providerID s; 4 unschedulable b; *5 taints M:Taint; *7 podCIDRs s",
    "Taint": "1 key s; 2 value s; 3 effect s; 4 timeAdded t",
    "NodeStatus": "1 capacity qmap; 2 allocatable qmap; 3 phase s; *4 conditions M:NodeCondition; "
    "*5 addresses M:NodeAddress",
    "NodeCondition": "1 type s; 2 status s; 3 lastHeartbeatTime t; 4 lastTransitionTime t; 5 reason s; "
    "6 message s",
    "NodeAddress": "1 type s; 2 address s",
    "Namespace": "2 spec M:NamespaceSpec; 3 status M:NamespaceStatus",
    "NamespaceSpec": "*1 finalizers s",
    "NamespaceStatus": "1 phase s",
    "ConfigMap": "2 data map; 3 binaryData map; 4 immutable b",
    "Secret": "2 data map; 3 type s; 4 stringData map; 5 immutable b",
    "Lease": "2 spec M:LeaseSpec",
    "LeaseSpec": "1 holderIdentity s; 2 leaseDurationSeconds i; 3 acquireTime t; 4 renewTime t; "
    "5 leaseTransitions i; 6 strategy s; 7 preferredHolder s",
    "Deployment": "2 spec M:DeploymentSpec; 3 status M:DeploymentStatus",
    "DeploymentSpec": "1 replicas i; 2 selector M:LabelSelector; 3 template M:PodTemplateSpec; "
    "5 minReadySeconds i; 6 revisionHistoryLimit i; 7 paused b; 9 progressDeadlineSeconds i",
    "DeploymentStatus": "1 observedGeneration i; 2 replicas i; 3 updatedReplicas i; 4 availableReplicas i; "
    "5 unavailableReplicas i; 7 readyReplicas i",
    "ReplicaSet": "2 spec M:ReplicaSetSpec; 3 status M:ReplicaSetStatus",
    "ReplicaSetSpec": "1 replicas i; 2 selector M:LabelSelector; 3 template M:PodTemplateSpec; "
    "4 minReadySeconds i",
    "ReplicaSetStatus": "1 replicas i; 2 fullyLabeledReplicas i; 3 observedGeneration i; 4 readyReplicas i; "
    "5 availableReplicas i",
    "DaemonSet": "2 spec M:DaemonSetSpec; 3 status M:DaemonSetStatus",
    "DaemonSetSpec": "1 selector M:LabelSelector; 2 template M:PodTemplateSpec; 4 minReadySeconds i; "
    "6 revisionHistoryLimit i",
    "DaemonSetStatus": "1 currentNumberScheduled i; 2 numberMisscheduled i; 3 desiredNumberScheduled i; "
    "4 numberReady i; 5 observedGeneration i; 6 updatedNumberScheduled i; 7 numberAvailable i; "
    "8 numberUnavailable i",
}


_Conv = Callable[[Any], Any] | None
_Field = tuple[str, _Conv, bool, str]  # name, converter, repeated, "" | "map" | "qmap"


def _parse_schema(text: dict[str, str]) -> dict[str, dict[str, _Field]]:
    out: dict[str, dict[str, _Field]] = {}
    for msg, spec in text.items():
        fields: dict[str, _Field] = {}
        for item in spec.split(";"):
            num, name, typ = item.split()
            conv: _Conv = None
            if typ.startswith("M:"):
                conv = functools.partial(_to_message, typ[2:])
            elif typ in _CONVERTERS:
                conv = _CONVERTERS[typ]
            fields[f"#{num.lstrip('*')}"] = (name, conv, num.startswith("*"), typ if "map" in typ else "")
        out[msg] = fields
    return out


#: Kinds whose ``fields`` are named below the top level too (others: ``#N`` below ``spec``/``status``).
NAMED_KINDS = frozenset(
    {
        "Pod",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "Node",
        "Namespace",
        "ConfigMap",
        "Secret",
        "Lease",
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
    }
)


def _as_message(v: Any) -> Any:
    """A value the heuristics kept as text although the schema says message: re-parse its bytes."""
    if v == "":
        return {}
    if isinstance(v, str):
        b = v.encode("utf-8")
        try:
            return _message(b, 0, len(b), 1)
        except WireError:
            return v
    return v


def _to_message(msg: str, v: Any) -> Any:
    return _named(_as_message(v), msg)


def _to_bool(v: Any) -> Any:
    return bool(v) if isinstance(v, int) else v


def _to_time(v: Any) -> Any:
    v = _as_message(v)
    if isinstance(v, dict) and v.keys() <= {"#1", "#2"}:
        secs, nanos = v.get("#1", 0), v.get("#2", 0)
        if isinstance(secs, int) and isinstance(nanos, int):
            return _rfc3339(secs, nanos)
    return v


def _to_int_or_string(v: Any) -> Any:
    """IntOrString{type: 0 int / 1 string, intVal, strVal} → int or str."""
    v = _as_message(v)
    if isinstance(v, dict):
        return v.get("#3", "") if v.get("#1") == 1 else v.get("#2", 0)
    return v


_CONVERTERS: dict[str, _Conv] = {"b": _to_bool, "t": _to_time, "ios": _to_int_or_string}


def _map(v: Any, quantity: bool) -> Any:
    entries = v if isinstance(v, list) else [v]
    out: dict[str, Any] = {}
    for e in entries:
        e = _as_message(e)
        if not isinstance(e, dict) or not e.keys() <= {"#1", "#2"}:
            return v  # not map entries after all: keep the generic form
        val = e.get("#2", "")
        if quantity:  # Quantity{string: 1}
            val = _as_message(val)
            if isinstance(val, dict):
                val = val.get("#1", val)
        out[str(e.get("#1", ""))] = val
    return out


def _named(tree: Any, msg: str) -> Any:
    """Rename ``#N`` keys of ``tree`` (a generic message) after schema ``msg``; unknown fields stay ``#N``."""
    schema = _SCHEMAS.get(msg)
    if schema is None or not isinstance(tree, dict):
        return tree
    out: dict[str, Any] = {}
    for k, v in tree.items():
        spec = schema.get(k)
        if spec is None:
            out[k] = v
            continue
        name, conv, repeated, mapkind = spec
        if mapkind:
            out[name] = _map(v, mapkind == "qmap")
        elif repeated:
            items = v if isinstance(v, list) else [v]
            out[name] = [conv(x) for x in items] if conv is not None else items
        else:
            x = v[-1] if isinstance(v, list) else v
            out[name] = conv(x) if conv is not None else x
    return out


_SCHEMAS = _parse_schema(_SCHEMA_TEXT)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _nz(s: Any) -> str | None:
    return s if isinstance(s, str) and s else None


def _s(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _pairs(entries: Any) -> dict[str, str]:
    return {_s(e.key): _s(e.value) for e in entries}


def _rfc3339(seconds: int, nanos: int = 0) -> str:
    try:
        dt = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    s = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        s += f".{nanos:09d}".rstrip("0")
    return s + "Z"


def _owner_ref(o: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "apiVersion": _s(o.apiVersion),
        "kind": _s(o.kind),
        "name": _s(o.name),
        "uid": _s(o.uid),
    }
    if o.HasField("controller"):
        d["controller"] = o.controller
    if o.HasField("blockOwnerDeletion"):
        d["blockOwnerDeletion"] = o.blockOwnerDeletion
    return d


def _meta_dict(meta: Message, generic: dict[str, Any]) -> dict[str, Any]:
    """ObjectMeta with JSON names; fields the descriptor doesn't know stay ``#N`` from the generic tree."""
    m: Any = meta
    d: dict[str, Any] = {}
    # The apiserver's encoder writes every non-pointer field; like its JSON (omitempty) drop "" and 0.
    for name in ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion"):
        value = getattr(m, name)
        if value:
            d[name] = _s(value)
    if m.generation:
        d["generation"] = m.generation
    for name in ("creationTimestamp", "deletionTimestamp"):
        if meta.HasField(name):
            t = getattr(m, name)
            d[name] = _rfc3339(t.seconds, t.nanos)
    if meta.HasField("deletionGracePeriodSeconds"):
        d["deletionGracePeriodSeconds"] = m.deletionGracePeriodSeconds
    if len(m.labels):
        d["labels"] = _pairs(m.labels)
    if len(m.annotations):
        d["annotations"] = _pairs(m.annotations)
    if len(m.ownerReferences):
        d["ownerReferences"] = [_owner_ref(o) for o in m.ownerReferences]
    if len(m.finalizers):
        d["finalizers"] = [_s(f) for f in m.finalizers]
    if len(m.managedFields):
        d["managedFields"] = [_managed_entry(e) for e in m.managedFields]
    for k, v in generic.items():
        if int(k[1:]) not in _META_NAMED:
            d[k] = v
    return d


def _managed_entry(e: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for name in ("manager", "operation", "apiVersion"):
        if getattr(e, name):
            d[name] = _s(getattr(e, name))
    if e.HasField("time"):
        d["time"] = _rfc3339(e.time.seconds, e.time.nanos)
    if e.fieldsType:
        d["fieldsType"] = _s(e.fieldsType)
    if e.HasField("fieldsV1"):
        d["fieldsV1"] = _s(e.fieldsV1.Raw)
    if e.subresource:
        d["subresource"] = _s(e.subresource)
    return d


def _identity_from_mapping(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    labels = meta.get("labels")
    owners = meta.get("ownerReferences")
    return {
        "api_version": _nz(obj.get("apiVersion")),
        "kind": _nz(obj.get("kind")),
        "namespace": _nz(meta.get("namespace")),
        "name": _nz(meta.get("name")),
        "uid": _nz(meta.get("uid")),
        "labels": {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        "owner_references": [dict(o) for o in owners if isinstance(o, dict)]
        if isinstance(owners, list)
        else [],
    }


# --------------------------------------------------------------------------------------------------
# format decoders
# --------------------------------------------------------------------------------------------------
def _decode_protobuf(key: str, value: bytes) -> Decoded:
    body = value[len(PROTO_PREFIX) :]
    base = len(PROTO_PREFIX)
    env: Any = UnknownPB()
    try:
        env.ParseFromString(body)
    except DecodeError:
        try:
            _message(body, 0, len(body), MAX_DEPTH)
            where = "invalid field contents"
        except WireError as exc:
            where = f"{exc.what} at byte offset {base + exc.offset}"
        return Decoded("protobuf", error=f"{key}: malformed protobuf envelope (runtime.Unknown): {where}")
    api_version = _s(env.typeMeta.apiVersion) or None
    kind = _s(env.typeMeta.kind) or None
    raw: bytes = env.raw
    content_encoding, content_type = _s(env.contentEncoding), _s(env.contentType)
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
        tree = _message(raw, 0, len(raw), 1, lazy=1)  # ObjectMeta: decoded by the protobuf library below
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
    top_names = TOP_LEVEL_NAMES.get(kind or "", _DEFAULT_TOP)
    fields: dict[str, Any] = {}
    schema = _SCHEMAS[kind] if kind in NAMED_KINDS else {}
    named = _named({k: v for k, v in tree.items() if k != "#1"}, kind) if schema and kind else {}
    for k, v in tree.items():
        num = int(k[1:])
        if num == 1:
            if meta_err is None and isinstance(v, _Span):
                extra: dict[str, Any] = {}
                if len(UnknownFieldSet(meta)):  # ObjectMeta fields the descriptor doesn't name
                    generic = _span_value(raw, v.start, v.end)
                    extra = generic if isinstance(generic, dict) else {}
                fields["metadata"] = _meta_dict(meta, extra)
            else:
                spans = v if isinstance(v, list) else [v]
                vals = [_span_value(raw, x.start, x.end) if isinstance(x, _Span) else x for x in spans]
                fields["#1"] = vals if isinstance(v, list) else vals[0]
        elif k in schema:
            name = schema[k][0]
            fields[name] = named[name]
        elif num in top_names:
            fields[top_names[num]] = v
        else:
            fields[k] = v
    return Decoded(
        "protobuf",
        api_version=api_version,
        kind=kind,
        namespace=_nz(_s(meta.namespace)),
        name=_nz(_s(meta.name)),
        uid=_nz(_s(meta.uid)),
        owner_references=[_owner_ref(o) for o in meta.ownerReferences],
        labels=_pairs(meta.labels),
        fields=fields,
        error=meta_err,
    )


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
    return Decoded("json", fields=obj, **_identity_from_mapping(obj))


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


def _decode_cbor(key: str, value: bytes) -> Decoded:
    reader = _CborReader(value, len(CBOR_PREFIX))
    try:
        obj = reader.item(0)
        if reader.i != len(value):
            raise _CborError(reader.i, f"{len(value) - reader.i} trailing bytes after the CBOR item")
        if obj is _BREAK:
            raise _CborError(len(CBOR_PREFIX), "a break code where a value was expected")
    except _CborError as exc:
        return Decoded("cbor", error=f"{key}: malformed CBOR: {exc.what} at byte offset {exc.offset}")
    if not isinstance(obj, dict):
        return Decoded("cbor", fields={"value": obj}, error=f"{key}: CBOR value is not a map")
    return Decoded("cbor", fields=obj, **_identity_from_mapping(obj))


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
            return _decode_protobuf(key, value)
        if value.startswith(ENC_PREFIX):
            return _decode_encrypted(key, value)
        if value.startswith(CBOR_PREFIX):
            return _decode_cbor(key, value)
        if value.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
            return _decode_json(key, value)
        if not value:
            return Decoded("binary", error=f"{key}: empty value")
        return _decode_other(key, value)
    except Exception as exc:  # the contract is "never raises"; report instead
        return Decoded("binary", error=f"{key}: internal decoder error {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------------
# a small CBOR reader (RFC 8949 subset: everything the apiserver's CBOR serializer writes)
# --------------------------------------------------------------------------------------------------
class _CborError(Exception):
    def __init__(self, offset: int, what: str) -> None:
        super().__init__(f"{what} at byte offset {offset}")
        self.offset = offset
        self.what = what


_BREAK = object()


class _CborReader:
    def __init__(self, data: bytes, start: int) -> None:
        self.d = data
        self.i = start

    def _need(self, n: int, at: int) -> bytes:
        if self.i + n > len(self.d):
            raise _CborError(at, f"truncated CBOR item (needs {n} more bytes)")
        b = self.d[self.i : self.i + n]
        self.i += n
        return b

    def _arg(self, ai: int, at: int) -> int:
        if ai < 24:
            return ai
        if ai == 24:
            return self._need(1, at)[0]
        if ai == 25:
            return int.from_bytes(self._need(2, at), "big")
        if ai == 26:
            return int.from_bytes(self._need(4, at), "big")
        if ai == 27:
            return int.from_bytes(self._need(8, at), "big")
        raise _CborError(at, f"reserved additional information {ai}")

    def _string_chunks(self, major: int, ai: int, at: int, depth: int) -> bytes:
        if ai == 31:
            chunks: list[bytes] = []
            while True:
                chunk_at = self.i
                c = self._need(1, chunk_at)[0]
                if c == 0xFF:
                    return b"".join(chunks)
                if c >> 5 != major or (c & 31) == 31:
                    raise _CborError(chunk_at, "bad chunk in an indefinite-length string")
                n = self._arg(c & 31, chunk_at)
                chunks.append(self._need(n, chunk_at))
        n = self._arg(ai, at)
        return self._need(n, at)

    def item(self, depth: int) -> Any:
        at = self.i
        if depth > MAX_DEPTH:
            raise _CborError(at, f"nesting deeper than {MAX_DEPTH}")
        ib = self._need(1, at)[0]
        major, ai = ib >> 5, ib & 31
        if major == 0:
            return self._arg(ai, at)
        if major == 1:
            return -1 - self._arg(ai, at)
        if major in (2, 3):
            raw = self._string_chunks(major, ai, at, depth)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                if major == 3:
                    raise _CborError(at, "text string is not valid UTF-8") from None
                return _b64(raw)
        if major == 4:
            out: list[Any] = []
            if ai == 31:
                while (v := self.item(depth + 1)) is not _BREAK:
                    out.append(v)
                return out
            for _ in range(self._arg(ai, at)):
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise _CborError(at, "unexpected break in an array")
                out.append(v)
            return out
        if major == 5:
            m: dict[str, Any] = {}
            count = None if ai == 31 else self._arg(ai, at)
            n = 0
            while count is None or n < count:
                k = self.item(depth + 1)
                if k is _BREAK:
                    if count is None:
                        return m
                    raise _CborError(at, "unexpected break in a map")
                v = self.item(depth + 1)
                if v is _BREAK:
                    raise _CborError(at, "map key without a value")
                m[k if isinstance(k, str) else json.dumps(k)] = v
                n += 1
            return m
        if major == 6:
            self._arg(ai, at)  # tag number: ignored (self-describe, timestamps, ...)
            v = self.item(depth + 1)
            if v is _BREAK:
                raise _CborError(at, "tag without an item")
            return v
        # major 7
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai in (22, 23):
            return None
        if ai == 24:
            return self._need(1, at)[0] and None
        if ai == 25:
            return struct.unpack(">e", self._need(2, at))[0]
        if ai == 26:
            return struct.unpack(">f", self._need(4, at))[0]
        if ai == 27:
            return struct.unpack(">d", self._need(8, at))[0]
        if ai == 31:
            return _BREAK
        if ai < 20:
            return None  # unassigned simple value
        raise _CborError(at, f"reserved simple value {ai}")
