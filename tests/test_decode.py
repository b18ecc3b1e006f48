"""decode_value on Kubernetes-encoded values built with protobuf (plus JSON, CBOR, encrypted, garbage)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.etcd.decode import Decoded, WireError, decode_value, wire_tree

try:
    from etcd_fixtures import endpointslice, envelope, k8s_value, pod, proto, service
except ImportError:  # tests/ is a package
    from tests.etcd_fixtures import endpointslice, envelope, k8s_value, pod, proto, service

RS_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "web-7d4b9c",
    "uid": "rs-uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def _roundtrip(d: Decoded) -> None:
    text = json.dumps(d.to_json())
    assert Decoded.from_json(json.loads(text)) == d


# ---------------------------------------------------------------------------------------------
# protobuf
# ---------------------------------------------------------------------------------------------
def test_pod_identity_and_fields() -> None:
    value = k8s_value("v1", "Pod", pod("default", "web-7d4b9c-abcde", uid="pod-uid-1", owner=RS_OWNER))
    d = decode_value("/registry/pods/default/web-7d4b9c-abcde", value)
    assert d.error is None
    assert (d.encoding, d.api_version, d.kind) == ("protobuf", "v1", "Pod")
    assert (d.namespace, d.name, d.uid) == ("default", "web-7d4b9c-abcde", "pod-uid-1")
    assert d.labels == {"app": "web", "pod-template-hash": "7d4b9c"}
    assert d.owner_references == [RS_OWNER]
    assert d.fields is not None
    meta = d.fields["metadata"]
    assert meta["name"] == "web-7d4b9c-abcde"
    assert meta["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert meta["managedFields"][1]["manager"] == "kubelet"
    assert meta["managedFields"][1]["fieldsV1"]["f:status"]["f:podIP"] == {}  # FieldsV1: the JSON itself
    assert meta["managedFields"][1]["time"] == "2023-11-14T22:13:20Z"
    assert (d.fields["apiVersion"], d.fields["kind"]) == ("v1", "Pod")
    # Pod is a named kind: spec/status with Kubernetes' JSON names
    spec, status = d.fields["spec"], d.fields["status"]
    assert [c["name"] for c in spec["containers"]] == ["app-0", "app-1"]
    assert spec["containers"][0]["args"] == ["netexec", "--http-port=8080", "--udp-port=8081"]
    assert spec["containers"][0]["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert spec["nodeName"] == "node-1"
    assert spec["enableServiceLinks"] is True
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.244.1.7"
    assert status["conditions"][2] == {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": "2023-11-14T22:15:00Z",
    }
    _roundtrip(d)


def test_field_level_change_is_visible() -> None:
    a = decode_value("k", k8s_value("v1", "Pod", pod("default", "p-1", uid="u", ip="10.244.1.7")))
    b = decode_value("k", k8s_value("v1", "Pod", pod("default", "p-1", uid="u", ip="10.244.1.8")))
    assert a.fields is not None
    assert b.fields is not None
    assert a.fields["spec"] == b.fields["spec"]
    assert a.fields["status"]["podIP"] == "10.244.1.7"
    assert b.fields["status"]["podIP"] == "10.244.1.8"


def test_service_and_endpointslice() -> None:
    svc = decode_value(
        "/registry/services/specs/default/web",
        k8s_value("v1", "Service", service("default", "web", uid="svc-uid")),
    )
    assert (svc.kind, svc.namespace, svc.name, svc.uid) == ("Service", "default", "web", "svc-uid")
    assert svc.fields is not None
    # the same shape as the JSON the apiserver would show
    assert svc.fields["spec"] == {
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        "selector": {"app": "web"},
        "clusterIP": "10.96.10.10",
        "type": "ClusterIP",
        "clusterIPs": ["10.96.10.10"],
    }
    assert svc.fields["status"] == {}
    eps = decode_value(
        "/registry/endpointslices/default/web-x7k2p",
        k8s_value(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            endpointslice(
                "default", "web", uid="eps-uid", service_uid="svc-uid", ips=["10.244.1.7", "10.244.2.9"]
            ),
        ),
    )
    assert eps.error is None
    assert (eps.api_version, eps.kind, eps.name, eps.uid) == (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "web-x7k2p",
        "eps-uid",
    )
    assert eps.owner_references == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": "svc-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert eps.labels["kubernetes.io/service-name"] == "web"
    assert eps.fields is not None
    assert [e["addresses"] for e in eps.fields["endpoints"]] == [["10.244.1.7"], ["10.244.2.9"]]
    assert eps.fields["endpoints"][0]["conditions"] == {"ready": True, "serving": True}
    assert eps.fields["endpoints"][0]["targetRef"]["kind"] == "Pod"
    assert eps.fields["addressType"] == "IPv4"
    assert eps.fields["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]  # a list even with one


def test_kind_without_descriptors_stays_generic_below_the_top() -> None:
    raw = proto("Pod", pod("default", "w-0", uid="w-uid"))
    d = decode_value("/registry/example.com/widgets/default/w-0", envelope("example.com/v1", "Widget", raw))
    assert d.error is None
    assert (d.kind, d.name, d.uid) == ("Widget", "w-0", "w-uid")
    assert d.fields is not None
    assert set(d.fields) == {"metadata", "spec", "status"}
    assert d.fields["spec"]["#10"] == "node-1"  # unknown schema: field numbers
    assert [c["#1"] for c in d.fields["spec"]["#2"]] == ["app-0", "app-1"]
    assert d.fields["status"]["#1"] == "Running"


def test_without_descriptors_the_generic_decoder_answers() -> None:
    """decode_protobuf(schema=None): what decode_value does when no descriptors can be had."""
    from pytest_k8sstate.etcd.decode.protobuf import decode_protobuf

    raw = proto("Pod", pod("default", "db-0", uid="sts-pod"))
    d = decode_protobuf("/registry/statefulsets/default/db", envelope("apps/v1", "StatefulSet", raw), None)
    assert d.error is None
    assert d.fields is not None
    assert set(d.fields) == {"metadata", "spec", "status"}
    assert d.fields["spec"]["#10"] == "node-1"
    p = decode_protobuf("k", k8s_value("v1", "Pod", pod("default", "p", uid="u")), None)
    assert p.fields is not None
    assert p.fields["spec"]["nodeName"] == "node-1"  # the hand-written schema of the common kinds


def test_unknown_fields_of_a_named_kind_keep_their_number() -> None:
    raw = proto("Service", service("default", "web", uid="u")) + b"\xa2\x06\x03new"  # field 100: "new"
    d = decode_value("k", envelope("v1", "Service", raw))
    assert d.fields is not None
    assert d.fields["#100"] == "new"
    assert d.fields["spec"]["clusterIP"] == "10.96.10.10"


def test_unknown_object_meta_field_is_kept() -> None:
    meta = proto("ObjectMeta", {"name": "cm", "namespace": "ns", "uid": "u"}) + b"\x9a\x06\x02hi"  # field 99
    raw = b"\x0a" + bytes([len(meta)]) + meta
    d = decode_value("/registry/configmaps/ns/cm", envelope("v1", "ConfigMap", raw))
    assert d.error is None
    assert d.fields == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "ns", "uid": "u", "#99": "hi"},
    }
    assert (d.name, d.namespace, d.uid) == ("cm", "ns", "u")


def test_cluster_scoped_object() -> None:
    raw = proto("Service", {"metadata": {"name": "cluster-thing", "namespace": "", "uid": "u-1"}})
    value = envelope("v1", "Namespace", raw)
    d = decode_value("/registry/namespaces/cluster-thing", value)
    assert (d.kind, d.name, d.namespace, d.uid) == ("Namespace", "cluster-thing", None, "u-1")


def _field(num: int, value: int | str | bytes) -> bytes:
    """One protobuf field, field number written out by the caller (varint for int, bytes otherwise)."""

    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])

    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | 2) + varint(len(data)) + data


def test_service_field_numbers_from_generated_proto() -> None:
    """Bytes built from k8s.io/api core/v1 generated.proto field numbers written out here (not from
    etcd_fixtures' or the decoder's tables): ServicePort{1 name, 2 protocol, 3 port, 4 targetPort
    IntOrString{1 type, 2 intVal, 3 strVal}, 5 nodePort, 6 appProtocol}, ServiceSpec{1 ports, 2 selector,
    3 clusterIP, 4 type, 5 externalIPs, 7 sessionAffinity, 11 externalTrafficPolicy, 12 healthCheckNodePort,
    18 clusterIPs, 19 ipFamilies, 22 internalTrafficPolicy}, ServiceStatus{1 loadBalancer{1 ingress{1 ip,
    2 hostname, 3 ipMode}}}, ObjectMeta{1 name, 3 namespace, 5 uid}."""
    target_port = _field(1, 1) + _field(3, "http")
    port = (
        _field(1, "web")
        + _field(2, "TCP")
        + _field(3, 80)
        + _field(4, target_port)
        + _field(5, 30080)
        + _field(6, "h2c")
    )
    spec = (
        _field(1, port)
        + _field(2, _field(1, "app") + _field(2, "web"))
        + _field(3, "10.96.0.10")
        + _field(4, "LoadBalancer")
        + _field(5, "192.0.2.1")
        + _field(7, "ClientIP")
        + _field(11, "Local")
        + _field(12, 31000)
        + _field(18, "10.96.0.10")
        + _field(19, "IPv4")
        + _field(22, "Cluster")
    )
    status = _field(1, _field(1, _field(1, "192.0.2.7") + _field(2, "lb.example") + _field(3, "VIP")))
    meta = _field(1, "web") + _field(3, "ns") + _field(5, "u-1")
    d = decode_value("k", envelope("v1", "Service", _field(1, meta) + _field(2, spec) + _field(3, status)))
    assert d.error is None
    assert d.fields is not None
    assert (d.name, d.namespace, d.uid) == ("web", "ns", "u-1")
    assert d.fields["spec"] == {
        "ports": [
            {
                "name": "web",
                "protocol": "TCP",
                "port": 80,
                "targetPort": "http",
                "nodePort": 30080,
                "appProtocol": "h2c",
            }
        ],
        "selector": {"app": "web"},
        "clusterIP": "10.96.0.10",
        "type": "LoadBalancer",
        "externalIPs": ["192.0.2.1"],
        "sessionAffinity": "ClientIP",
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 31000,
        "clusterIPs": ["10.96.0.10"],
        "ipFamilies": ["IPv4"],
        "internalTrafficPolicy": "Cluster",
    }
    assert d.fields["status"] == {
        "loadBalancer": {"ingress": [{"ip": "192.0.2.7", "hostname": "lb.example", "ipMode": "VIP"}]}
    }


# ---------------------------------------------------------------------------------------------
# JSON, CBOR, encrypted
# ---------------------------------------------------------------------------------------------
def test_json_custom_resource() -> None:
    cr = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {
            "name": "w1",
            "namespace": "team-a",
            "uid": "cr-uid",
            "labels": {"tier": "gold"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cfg", "uid": "cm-uid"}],
        },
        "spec": {"size": 3},
    }
    d = decode_value("/registry/example.com/widgets/team-a/w1", json.dumps(cr).encode() + b"\n")
    assert (d.encoding, d.api_version, d.kind, d.namespace, d.name, d.uid) == (
        "json",
        "example.com/v1",
        "Widget",
        "team-a",
        "w1",
        "cr-uid",
    )
    assert d.labels == {"tier": "gold"}
    assert d.owner_references[0]["uid"] == "cm-uid"
    assert d.fields == cr
    assert d.error is None
    _roundtrip(d)


def test_json_storage_media_type_pod() -> None:
    obj = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default", "uid": "x"}}
    d = decode_value("/registry/pods/default/p", json.dumps(obj).encode())
    assert (d.encoding, d.kind, d.name) == ("json", "Pod", "p")


def _cbor(obj: Any) -> bytes:
    """Tiny CBOR encoder for the test; strings as byte strings like the apiserver's CBOR serializer."""

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        if n < 65536:
            return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")

    if obj is True:
        return b"\xf5"
    if obj is False:
        return b"\xf4"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, int):
        return head(0, obj) if obj >= 0 else head(1, -1 - obj)
    if isinstance(obj, float):
        return b"\xfb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        b = obj.encode()
        return head(2, len(b)) + b
    if isinstance(obj, list):
        return head(4, len(obj)) + b"".join(_cbor(x) for x in obj)
    if isinstance(obj, dict):
        return head(5, len(obj)) + b"".join(_cbor(k) + _cbor(v) for k, v in obj.items())
    raise TypeError(obj)


def test_cbor_value() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "default", "uid": "cbor-uid", "labels": {"a": "b"}},
        "data": {"k": "v"},
        "n": -5,
        "f": 1.5,
        "ok": True,
        "nothing": None,
    }
    d = decode_value("/registry/configmaps/default/cm", b"\xd9\xd9\xf7" + _cbor(obj))
    assert d.error is None
    assert (d.encoding, d.kind, d.namespace, d.name, d.uid) == (
        "cbor",
        "ConfigMap",
        "default",
        "cm",
        "cbor-uid",
    )
    assert d.labels == {"a": "b"}
    assert d.fields == obj
    # indefinite-length map and text string
    indef = b"\xd9\xd9\xf7\xbf" + _cbor("kind") + b"\x7f\x62Co\x62nf\xff" + b"\xff"
    d2 = decode_value("k", indef)
    assert d2.kind == "Conf"
    assert d2.error is None


def test_cbor_truncated_reports_offset() -> None:
    value = b"\xd9\xd9\xf7" + _cbor({"kind": "ConfigMap", "metadata": {"name": "x"}})
    d = decode_value("/registry/configmaps/default/x", value[:-2])
    assert d.encoding == "cbor"
    assert d.error is not None
    assert "/registry/configmaps/default/x" in d.error
    assert "byte offset" in d.error


@pytest.mark.parametrize(
    ("value", "provider", "key_name"),
    [
        (b"k8s:enc:aescbc:v1:key1:\x8f\x00\x01ciphertext", "aescbc", "key1"),
        (b"k8s:enc:secretbox:v1:mykey:\xff\xfe", "secretbox", "mykey"),
        (b"k8s:enc:kms:v2:vault-kms:\x0a\x03abc", "kms", "vault-kms"),
    ],
)
def test_encrypted(value: bytes, provider: str, key_name: str) -> None:
    d = decode_value("/registry/secrets/default/s", value)
    assert (d.encoding, d.provider, d.key_name, d.error) == ("encrypted", provider, key_name, None)
    assert d.fields is None
    assert d.name is None
    _roundtrip(d)


# ---------------------------------------------------------------------------------------------
# malformed values: never raise, error names the key and the offset
# ---------------------------------------------------------------------------------------------
def test_truncated_protobuf_reports_key_and_offset() -> None:
    value = k8s_value("v1", "Pod", pod("default", "p"))
    d = decode_value("/registry/pods/default/p", value[:200])
    assert d.encoding == "protobuf"
    assert d.error is not None
    assert d.error.startswith("/registry/pods/default/p: ")
    assert "byte offset" in d.error


def test_malformed_raw_inside_valid_envelope() -> None:
    raw = proto("Pod", {"metadata": {"name": "p", "namespace": "ns"}}) + b"\x12\x7f\x01"  # length past end
    d = decode_value("/registry/pods/ns/p", envelope("v1", "Pod", raw))
    assert (d.kind, d.api_version) == ("Pod", "v1")
    assert d.error is not None
    assert "malformed object" in d.error
    assert "byte offset" in d.error
    offset = int(d.error.rsplit("byte offset ", 1)[1])
    value = envelope("v1", "Pod", raw)
    assert (
        value[offset : offset + 2] == b"\x12\x7f"
    )  # points at the bad field (tag, length) in the etcd value


def test_content_encoding_reported() -> None:
    d = decode_value("k", envelope("v1", "Pod", b"\x1f\x8b\x08gzipped", content_encoding="gzip"))
    assert d.kind == "Pod"
    assert d.error is not None
    assert "gzip" in d.error


@pytest.mark.parametrize(
    ("value", "encoding", "needle"),
    [
        (b"", "binary", "empty value"),
        (b"\x00\x01\x02\xff\xfe", "binary", "invalid UTF-8 at byte offset 3"),
        (b"hello world", "text", "not a Kubernetes object"),
        (b'{"kind": "Pod", ', "text", "does not parse"),
        (b"[1, 2]", "json", "not an object"),
    ],
)
def test_other_values(value: bytes, encoding: str, needle: str) -> None:
    d = decode_value(b"/registry/x/y", value)
    assert d.encoding == encoding
    assert d.error is not None
    assert needle in d.error
    assert "/registry/x/y" in d.error


# ---------------------------------------------------------------------------------------------
# the wire tree heuristics (documented in decode.py)
# ---------------------------------------------------------------------------------------------
def test_wire_tree_heuristics() -> None:
    nested = b"\x0a\x03abc"  # {1: "abc"}
    data = (
        b"\x0a"
        + bytes([len(nested)])
        + nested  # 1: nested message
        + b"\x12\x05hello"  # 2: printable text → string
        + b"\x1a\x02\xff\xfe"  # 3: not UTF-8, not a message → base64
        + b"\x20\x96\x01"  # 4: varint 150
        + b"\x20\x01"  # 4 again → list
        + b"\x2d\x01\x00\x00\x00"  # 5: fixed32
        + b"\x31"
        + (7).to_bytes(8, "little")  # 6: fixed64
        + b"\x3a\x00"  # 7: empty → ""
        + b"\x40"
        + b"\xff" * 9
        + b"\x01"  # 8: -1 as int64
    )
    assert wire_tree(data) == {
        "#1": {"#1": "abc"},
        "#2": "hello",
        "#3": "base64://4=",
        "#4": [150, 1],
        "#5": 1,
        "#6": 7,
        "#7": "",
        "#8": -1,
    }
    with pytest.raises(WireError) as exc:
        wire_tree(b"\x0a\x05ab")
    assert exc.value.offset == 0


# ---------------------------------------------------------------------------------------------
# fuzz: never raises, always JSON-able
# ---------------------------------------------------------------------------------------------
_SEEDS = [
    k8s_value("v1", "Pod", pod("default", "p", owner=RS_OWNER)),
    b"\xd9\xd9\xf7" + _cbor({"kind": "X", "metadata": {"name": "n"}, "l": [1, 2.5, None]}),
    b'{"kind": "Widget", "metadata": {"name": "w"}}',
    b"k8s:enc:aescbc:v1:key1:abc",
]


def _check(value: bytes) -> None:
    d = decode_value("/registry/fuzz/k", value)
    assert isinstance(d, Decoded)
    assert d.error is None or "internal decoder error" not in d.error, d.error
    json.dumps(d.to_json())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(value: bytes) -> None:
    _check(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([b"k8s\x00", b"\xd9\xd9\xf7", b"k8s:enc:", b"{", b"["]),
    st.binary(max_size=300),
)
def test_fuzz_prefixed(prefix: bytes, rest: bytes) -> None:
    _check(prefix + rest)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEEDS), st.data())
def test_fuzz_mutated_real_values(seed: bytes, data: st.DataObject) -> None:
    b = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del b[i:]
        else:
            b[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    _check(bytes(b))
