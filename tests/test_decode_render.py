"""Full decoding, value by value: bytes written here from the field numbers of k8s.io/api's generated.proto
(spelled out in each test, not taken from the decoder) and the JSON the apiserver serves for them."""

from __future__ import annotations

import base64
import json

import pytest

from pytest_k8sstate.etcd.decode import decode_value
from pytest_k8sstate.etcd.decode.protobuf import active_schema

try:
    from etcd_fixtures import envelope
except ImportError:  # tests/ is a package
    from tests.etcd_fixtures import envelope


@pytest.fixture(autouse=True)
def _descriptors() -> None:
    if active_schema() is None:
        pytest.skip("descriptors unavailable (no module cache, no module proxy)")


def _v(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def f(num: int, value: int | str | bytes) -> bytes:
    if isinstance(value, int):
        return _v(num << 3) + _v(value & ((1 << 64) - 1))
    data = value.encode() if isinstance(value, str) else value
    return _v(num << 3 | 2) + _v(len(data)) + data


META = f(1, f(1, "x") + f(3, "ns") + f(5, "u-1") + f(8, f(1, 1_764_756_000)))  # name, namespace, uid, created


def decode(api_version: str, kind: str, body: bytes) -> dict[str, object]:
    d = decode_value("/registry/x", envelope(api_version, kind, META + body))
    assert d.error is None, d.error
    assert d.fields is not None
    assert (d.name, d.namespace, d.uid) == ("x", "ns", "u-1")
    assert d.fields["metadata"] == {
        "name": "x",
        "namespace": "ns",
        "uid": "u-1",
        "creationTimestamp": "2025-12-03T10:00:00Z",
    }
    return d.fields


def test_deployment_pointer_zero_kept_and_template_time_null() -> None:
    # DeploymentSpec{1 replicas *int32, 2 selector, 3 template{1 metadata, 2 spec}, 5 minReadySeconds int32
    # omitempty}; ObjectMeta 8 creationTimestamp: a zero Time is an empty message
    tmpl = f(1, f(8, b"")) + f(2, f(2, f(1, "c") + f(2, "img")))
    spec = f(1, 0) + f(2, f(1, f(1, "app") + f(2, "d"))) + f(3, tmpl) + f(5, 0)
    fields = decode("apps/v1", "Deployment", f(2, spec) + f(3, b""))
    assert fields["apiVersion"] == "apps/v1"
    assert fields["kind"] == "Deployment"
    assert fields["spec"] == {
        "replicas": 0,  # *int32: 0 is shown
        "selector": {"matchLabels": {"app": "d"}},
        "template": {
            "metadata": {},  # creationTimestamp is omitzero
            "spec": {"containers": [{"name": "c", "image": "img"}]},
        },
    }
    assert fields["status"] == {}


def test_service_zero_ports_omitted_int_or_string_and_bools() -> None:
    # ServicePort{1 name, 2 protocol, 3 port, 4 targetPort IntOrString{1 type, 2 intVal, 3 strVal},
    # 5 nodePort}
    p1 = f(1, "http") + f(2, "TCP") + f(3, 80) + f(4, f(1, 1) + f(3, "web")) + f(5, 0)
    p2 = f(1, "") + f(2, "UDP") + f(3, 53) + f(4, f(1, 0) + f(2, 5353)) + f(5, 30053)
    # ServiceSpec{1 ports, 3 clusterIP, 4 type, 13 publishNotReadyAddresses bool, 20 allocate... *bool}
    spec = f(1, p1) + f(1, p2) + f(3, "10.96.0.1") + f(4, "NodePort") + f(13, 0) + f(20, 0)
    fields = decode("v1", "Service", f(2, spec) + f(3, f(1, b"")))
    assert fields["spec"] == {
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"},
            {"protocol": "UDP", "port": 53, "targetPort": 5353, "nodePort": 30053},
        ],
        "clusterIP": "10.96.0.1",
        "type": "NodePort",
        "allocateLoadBalancerNodePorts": False,  # *bool false is shown, a plain bool false is not
    }
    assert fields["status"] == {"loadBalancer": {}}


def test_secret_bytes_base64_and_configmap_binary_data() -> None:
    # Secret{2 data map<string, bytes>, 3 type}
    # ConfigMap{2 data, 3 binaryData map<string, bytes>, 4 immutable *bool}
    s = decode("v1", "Secret", f(2, f(1, "pw") + f(2, b"\x00s3cret\xff")) + f(3, "Opaque"))
    assert s["data"] == {"pw": base64.b64encode(b"\x00s3cret\xff").decode()}
    assert s["type"] == "Opaque"
    cm = decode("v1", "ConfigMap", f(2, f(1, "k") + f(2, "")) + f(3, f(1, "b") + f(2, b"\x01")) + f(4, 1))
    assert cm["data"] == {"k": ""}
    assert cm["binaryData"] == {"b": "AQ=="}
    assert cm["immutable"] is True


def test_controller_revision_data_json_or_base64() -> None:
    # ControllerRevision{2 data RawExtension{1 raw}, 3 revision int64}
    doc = {"spec": {"template": {"x": [1, "two", None]}}}
    fields = decode("apps/v1", "ControllerRevision", f(2, f(1, json.dumps(doc))) + f(3, 7))
    assert fields["data"] == doc
    assert fields["revision"] == 7
    fields = decode("apps/v1", "ControllerRevision", f(2, f(1, b"\x0a\x01\xff")) + f(3, 1))
    assert fields["data"] == base64.b64encode(b"\x0a\x01\xff").decode()


def test_lease_micro_time_and_event_series() -> None:
    # LeaseSpec{1 holderIdentity, 2 leaseDurationSeconds, 3 acquireTime MicroTime{1 seconds, 2 nanos}}
    t = f(1, 1_764_756_000) + f(2, 123_456_000)
    fields = decode("coordination.k8s.io/v1", "Lease", f(2, f(1, "h") + f(2, 15) + f(3, t)))
    assert fields["spec"] == {
        "holderIdentity": "h",
        "leaseDurationSeconds": 15,
        "acquireTime": "2025-12-03T10:00:00.123456Z",
    }


def test_cluster_role_rules_null_when_absent() -> None:
    # ClusterRole{2 rules []PolicyRule `json:"rules"` (no omitempty), 3 aggregationRule}
    fields = decode("rbac.authorization.k8s.io/v1", "ClusterRole", f(3, f(1, f(1, f(1, "a") + f(2, "b")))))
    assert fields["rules"] is None  # what the apiserver serves for a nil slice
    assert fields["aggregationRule"] == {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}


def test_pod_inline_volume_source_quantity_and_duration_free_fields() -> None:
    # Volume{1 name, 2 VolumeSource (inline){2 emptyDir{1 medium, 2 sizeLimit Quantity{1 string}}}}
    vol = f(1, "tmp") + f(2, f(2, f(1, "") + f(2, f(1, "1Gi"))))
    # ResourceRequirements{1 limits map<string, Quantity>}
    ctr = f(1, "c") + f(2, "img") + f(8, f(1, f(1, "cpu") + f(2, f(1, "250m"))))
    fields = decode("v1", "Pod", f(2, f(1, vol) + f(2, ctr)))
    spec = fields["spec"]
    assert isinstance(spec, dict)
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert spec["containers"] == [{"name": "c", "image": "img", "resources": {"limits": {"cpu": "250m"}}}]


def test_csr_extra_values_are_lists() -> None:
    # CertificateSigningRequestSpec{1 request bytes, 6 extra map<string, ExtraValue{1 items}>, 7 signerName}
    spec = f(1, b"PEM") + f(6, f(1, "k") + f(2, f(1, "a") + f(1, "b"))) + f(7, "example.com/s")
    fields = decode("certificates.k8s.io/v1", "CertificateSigningRequest", f(2, spec))
    assert fields["spec"] == {"request": "UEVN", "extra": {"k": ["a", "b"]}, "signerName": "example.com/s"}


def test_crd_schema_names_and_or_bool() -> None:
    # JSONSchemaProps{3 $ref, 5 type, 9 maximum double, 30 additionalProperties OrBool{1 allows, 2 schema},
    # 38 x-kubernetes-preserve-unknown-fields *bool}
    import struct

    props = f(3, "#/d") + f(5, "object") + _v(9 << 3 | 1) + struct.pack("<d", 2.5) + f(30, f(1, 0)) + f(38, 1)
    # CRD{2 spec{1 group, 4 scope, 7 versions[{1 name, 2 served, 3 storage, 4 schema{1 openAPIV3Schema}}]}}
    ver = f(1, "v1") + f(2, 1) + f(3, 1) + f(4, f(1, props))
    spec = f(1, "example.com") + f(4, "Namespaced") + f(7, ver)
    fields = decode("apiextensions.k8s.io/v1", "CustomResourceDefinition", f(2, spec))
    spec_json = fields["spec"]
    assert isinstance(spec_json, dict)
    assert spec_json["versions"][0]["schema"]["openAPIV3Schema"] == {
        "$ref": "#/d",
        "type": "object",
        "maximum": 2.5,
        "additionalProperties": False,
        "x-kubernetes-preserve-unknown-fields": True,
    }


def test_unknown_field_and_wrong_wire_type_keep_their_number() -> None:
    # ConfigMap has no field 9; field 2 (data, a map) sent as a varint: both kept generically
    fields = decode("v1", "ConfigMap", f(9, "new") + f(2, 5))
    assert fields["#9"] == "new"
    assert fields["#2"] == 5


def test_malformed_object_reports_offset() -> None:
    d = decode_value("/registry/deployments/ns/x", envelope("apps/v1", "Deployment", META + b"\x12\x7f\x01"))
    assert d.error is not None
    assert "/registry/deployments/ns/x" in d.error
    assert "byte offset" in d.error


def test_non_finite_doubles_stay_strict_json() -> None:
    import struct

    # JSONSchemaProps{9 maximum double}: NaN is not JSON (Go never stores it); kept as text
    props = _v(9 << 3 | 1) + struct.pack("<d", float("nan"))
    spec = f(7, f(1, "v1") + f(4, f(1, props)))
    fields = decode("apiextensions.k8s.io/v1", "CustomResourceDefinition", f(2, spec))
    assert fields["spec"] == {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"maximum": "nan"}}}]}
    json.dumps(fields, allow_nan=False)
