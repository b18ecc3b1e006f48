"""Real-etcd fixtures and Kubernetes-encoded values for the etcd/decode tests and bench/bench_etcd.py.

Values are built with the ``protobuf`` library from descriptors declared here (field numbers from
k8s.io/api core/v1 and discovery/v1 generated.proto, a realistic subset), wrapped the way kube-apiserver
stores them: ``k8s\\x00`` + ``runtime.Unknown{typeMeta, raw, contentEncoding, contentType}``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from pytest_k8sstate.errors import BinaryError
from pytest_k8sstate.etcd.client import EtcdClient
from pytest_k8sstate.etcd.server import EtcdServer, find_etcd_binary
from pytest_k8sstate.pki import Pki, generate_pki

_F = descriptor_pb2.FieldDescriptorProto
_T = {
    "s": _F.TYPE_STRING,
    "b": _F.TYPE_BYTES,
    "i64": _F.TYPE_INT64,
    "i32": _F.TYPE_INT32,
    "bool": _F.TYPE_BOOL,
}

# message -> [(field name, number, type or message name, repeated)]; "map" = map<string,string>
_SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "TypeMeta": [("apiVersion", 1, "s", False), ("kind", 2, "s", False)],
    "Unknown": [
        ("typeMeta", 1, "TypeMeta", False),
        ("raw", 2, "b", False),
        ("contentEncoding", 3, "s", False),
        ("contentType", 4, "s", False),
    ],
    "Time": [("seconds", 1, "i64", False), ("nanos", 2, "i32", False)],
    "OwnerReference": [
        ("kind", 1, "s", False),
        ("name", 3, "s", False),
        ("uid", 4, "s", False),
        ("apiVersion", 5, "s", False),
        ("controller", 6, "bool", False),
        ("blockOwnerDeletion", 7, "bool", False),
    ],
    "FieldsV1": [("Raw", 1, "b", False)],
    "ManagedFieldsEntry": [
        ("manager", 1, "s", False),
        ("operation", 2, "s", False),
        ("apiVersion", 3, "s", False),
        ("time", 4, "Time", False),
        ("fieldsType", 6, "s", False),
        ("fieldsV1", 7, "FieldsV1", False),
    ],
    "ObjectMeta": [
        ("name", 1, "s", False),
        ("generateName", 2, "s", False),
        ("namespace", 3, "s", False),
        ("uid", 5, "s", False),
        ("resourceVersion", 6, "s", False),
        ("generation", 7, "i64", False),
        ("creationTimestamp", 8, "Time", False),
        ("labels", 11, "map", True),
        ("annotations", 12, "map", True),
        ("ownerReferences", 13, "OwnerReference", True),
        ("finalizers", 14, "s", True),
        ("managedFields", 17, "ManagedFieldsEntry", True),
    ],
    "ContainerPort": [
        ("name", 1, "s", False),
        ("containerPort", 3, "i32", False),
        ("protocol", 4, "s", False),
    ],
    "EnvVar": [("name", 1, "s", False), ("value", 2, "s", False)],
    "Container": [
        ("name", 1, "s", False),
        ("image", 2, "s", False),
        ("command", 3, "s", True),
        ("args", 4, "s", True),
        ("ports", 6, "ContainerPort", True),
        ("env", 7, "EnvVar", True),
        ("terminationMessagePath", 13, "s", False),
        ("imagePullPolicy", 14, "s", False),
    ],
    "PodSpec": [
        ("containers", 2, "Container", True),
        ("restartPolicy", 3, "s", False),
        ("terminationGracePeriodSeconds", 4, "i64", False),
        ("dnsPolicy", 6, "s", False),
        ("nodeSelector", 7, "map", True),
        ("serviceAccountName", 8, "s", False),
        ("nodeName", 10, "s", False),
        ("schedulerName", 19, "s", False),
        ("priority", 25, "i32", False),
        ("enableServiceLinks", 30, "bool", False),
    ],
    "PodCondition": [
        ("type", 1, "s", False),
        ("status", 2, "s", False),
        ("lastTransitionTime", 4, "Time", False),
    ],
    "PodStatus": [
        ("phase", 1, "s", False),
        ("conditions", 2, "PodCondition", True),
        ("hostIP", 5, "s", False),
        ("podIP", 6, "s", False),
        ("startTime", 7, "Time", False),
        ("qosClass", 9, "s", False),
    ],
    "Pod": [
        ("metadata", 1, "ObjectMeta", False),
        ("spec", 2, "PodSpec", False),
        ("status", 3, "PodStatus", False),
    ],
    "IntOrString": [("type", 1, "i64", False), ("intVal", 2, "i32", False), ("strVal", 3, "s", False)],
    "ServicePort": [
        ("name", 1, "s", False),
        ("protocol", 2, "s", False),
        ("port", 3, "i32", False),
        ("targetPort", 4, "IntOrString", False),
    ],
    "ServiceSpec": [
        ("ports", 1, "ServicePort", True),
        ("selector", 2, "map", True),
        ("clusterIP", 3, "s", False),
        ("type", 4, "s", False),
        ("clusterIPs", 18, "s", True),
    ],
    "ServiceStatus": [],
    "Service": [
        ("metadata", 1, "ObjectMeta", False),
        ("spec", 2, "ServiceSpec", False),
        ("status", 3, "ServiceStatus", False),
    ],
    "Secret": [("metadata", 1, "ObjectMeta", False), ("data", 2, "map", True), ("type", 3, "s", False)],
    "EndpointConditions": [("ready", 1, "bool", False), ("serving", 2, "bool", False)],
    "ObjectReference": [
        ("kind", 1, "s", False),
        ("namespace", 2, "s", False),
        ("name", 3, "s", False),
        ("uid", 4, "s", False),
    ],
    "Endpoint": [
        ("addresses", 1, "s", True),
        ("conditions", 2, "EndpointConditions", False),
        ("targetRef", 4, "ObjectReference", False),
        ("nodeName", 6, "s", False),
    ],
    "EndpointPort": [("name", 1, "s", False), ("protocol", 2, "s", False), ("port", 3, "i32", False)],
    "EndpointSlice": [
        ("metadata", 1, "ObjectMeta", False),
        ("endpoints", 2, "Endpoint", True),
        ("ports", 3, "EndpointPort", True),
        ("addressType", 4, "s", False),
    ],
}


def _build() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(name="tests/k8s_test.proto", package="k8stest", syntax="proto2")
    for name, fields in _SCHEMA.items():
        msg = fdp.message_type.add(name=name)
        for fname, num, ftype, repeated in fields:
            f = msg.field.add(name=fname, number=num)
            f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if ftype == "map":
                entry_name = fname[0].upper() + fname[1:] + "Entry"
                entry = msg.nested_type.add(name=entry_name)
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".k8stest.{name}.{entry_name}"
            elif ftype in _T:
                f.type = _T[ftype]
            else:
                f.type = _F.TYPE_MESSAGE
                f.type_name = f".k8stest.{ftype}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"k8stest.{n}")) for n in _SCHEMA}


MESSAGES = _build()


def proto(kind: str, obj: dict[str, Any]) -> bytes:
    """Serialize ``obj`` (Kubernetes JSON field names) as message ``kind``."""
    msg = json_format.ParseDict(obj, MESSAGES[kind]())
    return bytes(msg.SerializeToString())


def envelope(api_version: str, kind: str, raw: bytes, content_encoding: str = "") -> bytes:
    """``k8s\\x00`` + runtime.Unknown around already-serialized ``raw``."""
    env = MESSAGES["Unknown"](
        typeMeta=MESSAGES["TypeMeta"](apiVersion=api_version, kind=kind),
        raw=raw,
        contentEncoding=content_encoding,
        contentType="",
    )
    return b"k8s\x00" + bytes(env.SerializeToString())


def k8s_value(api_version: str, kind: str, obj: dict[str, Any]) -> bytes:
    """What kube-apiserver writes to etcd for ``obj`` with the protobuf storage media type."""
    return envelope(api_version, kind, proto(kind, obj))


def _managed(manager: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "v1",
        "time": {"seconds": 1_700_000_000},
        "fieldsType": "FieldsV1",
        "fieldsV1": {"Raw": base64.b64encode(json.dumps(fields).encode()).decode()},
    }


def pod(
    namespace: str,
    name: str,
    *,
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
    node: str = "node-1",
    ip: str = "10.244.1.7",
    containers: int = 2,
) -> dict[str, Any]:
    """A realistic pod (~2.5 KB as protobuf with its managedFields)."""
    uid = uid or str(uuid.uuid4())
    ctrs = [
        {
            "name": f"app-{i}",
            "image": f"registry.k8s.io/e2e-test-images/agnhost:2.{40 + i}",
            "args": ["netexec", "--http-port=8080", "--udp-port=8081"],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": f"ENV_{j}", "value": f"value-{j}-{name}"} for j in range(6)],
            "terminationMessagePath": "/dev/termination-log",
            "imagePullPolicy": "IfNotPresent",
        }
        for i in range(containers)
    ]
    meta: dict[str, Any] = {
        "name": name,
        "generateName": name.rsplit("-", 1)[0] + "-",
        "namespace": namespace,
        "uid": uid,
        "creationTimestamp": {"seconds": 1_700_000_000},
        "labels": labels if labels is not None else {"app": "web", "pod-template-hash": "7d4b9c"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
        "managedFields": [
            _managed("kube-controller-manager", {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {}}),
            _managed("kubelet", {"f:status": {"f:conditions": {}, "f:podIP": {}, "f:phase": {}}}),
        ],
    }
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "metadata": meta,
        "spec": {
            "containers": ctrs,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": node,
            "schedulerName": "default-scheduler",
            "priority": 0,
            "enableServiceLinks": True,
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": {"seconds": 1_700_000_100}}
                for t in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
            ],
            "hostIP": "172.18.0.2",
            "podIP": ip,
            "startTime": {"seconds": 1_700_000_050},
            "qosClass": "BestEffort",
        },
    }


def service(namespace: str, name: str, *, uid: str, cluster_ip: str = "10.96.10.10") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": {"app": name},
            "creationTimestamp": {"seconds": 1_700_000_000},
        },
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": {"type": 0, "intVal": 8080}}
            ],
            "selector": {"app": name},
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "type": "ClusterIP",
        },
        "status": {},
    }


def endpointslice(
    namespace: str, service_name: str, *, uid: str, service_uid: str, ips: list[str]
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{service_name}-x7k2p",
            "generateName": f"{service_name}-",
            "namespace": namespace,
            "uid": uid,
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": service_name,
                    "uid": service_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True, "serving": True},
                "targetRef": {
                    "kind": "Pod",
                    "namespace": namespace,
                    "name": f"{service_name}-{i}",
                    "uid": "u",
                },
                "nodeName": "node-1",
            }
            for i, ip in enumerate(ips)
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "addressType": "IPv4",
    }


# ------------------------------------------------------------------------------------------------
# fixtures: one real etcd (client-cert TLS, kubeadm layout) per test module
# ------------------------------------------------------------------------------------------------
def start_etcd(base: Path) -> tuple[Pki, EtcdServer]:
    pki = generate_pki(base / "pki", apiserver_sans=[], etcd_sans=[])
    server = EtcdServer(
        find_etcd_binary(),
        base / "etcd",
        pki=pki,
        extra_args=["--unsafe-no-fsync", "--quota-backend-bytes=4294967296"],
    )
    server.start(timeout=60)
    return pki, server


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    try:
        find_etcd_binary()
    except BinaryError as exc:
        pytest.skip(str(exc))
    _, server = start_etcd(tmp_path_factory.mktemp("etcd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd(etcd_server: EtcdServer) -> Iterator[EtcdClient]:
    """A client to the module's etcd, emptied before the test."""
    with EtcdClient(etcd_server.target) as client:
        client.delete(b"\x00", range_end=b"\x00")
        yield client
