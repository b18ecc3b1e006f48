"""Full decoding checked against a real kube-apiserver: every object it stores, decoded from etcd, equals the
JSON it serves for that object (leaf by leaf), for objects of many kinds created here plus its own bootstrap
objects (RBAC, flow control, priority classes, ...). Field numbers and names come from the running
apiserver and the API modules' generated.proto, never from a table in this repository."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest

from pytest_k8sstate.etcd.capture import collect_etcd
from pytest_k8sstate.etcd.decode import wire_tree
from pytest_k8sstate.etcd.decode.protobuf import active_schema, decode_protobuf

try:
    from test_etcd import _Apiserver, _kube_apiserver
except ImportError:  # tests/ is a package
    from tests.test_etcd import _Apiserver, _kube_apiserver

T0 = "2026-12-03T10:00:00Z"
MICRO = "2026-12-03T10:00:00.123456Z"
CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n").decode()
TEMPLATE = {
    "metadata": {"labels": {"app": "d"}},
    "spec": {
        "containers": [
            {
                "name": "c",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 3},
                "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": False},
            }
        ],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "k", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420, "optional": True}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    },
}
SEL = {"matchLabels": {"app": "d"}}
CRD_SCHEMA = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                "mode": {"type": "string", "enum": ["a", "b"], "pattern": "^[ab]$"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "object", "additionalProperties": {"type": "string"}},
                "any": {"x-kubernetes-int-or-string": True},
            },
        }
    },
}
WEBHOOK = {
    "name": "w.example.com",
    "clientConfig": {"url": "https://hook.example.com/x", "caBundle": CA},
    "rules": [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ],
    "failurePolicy": "Ignore",
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
    "timeoutSeconds": 5,
    "namespaceSelector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]},
    "matchConditions": [{"name": "m", "expression": "true"}],
}

#: (collection path, object, status to PATCH in or None)
OBJECTS: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("/api/v1/namespaces", {"metadata": {"name": "dec", "labels": {"t": "1"}}}, None),
    (
        "/api/v1/namespaces/dec/configmaps",
        {"metadata": {"name": "cfg"}, "data": {"k": "v", "empty": ""}, "binaryData": {"b": "AAEC/w=="}},
        None,
    ),
    ("/api/v1/namespaces/dec/secrets", {"metadata": {"name": "s"}, "data": {"pw": "c2VjcmV0"}}, None),
    (
        "/api/v1/namespaces/dec/services",
        {
            "metadata": {"name": "svc", "annotations": {"a": "b"}},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "d"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "x", "port": 81}],
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
            },
        },
        None,
    ),
    (
        "/api/v1/namespaces/dec/services",
        {"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}},
        None,
    ),
    (
        "/api/v1/namespaces/dec/pods",
        {"metadata": {"name": "p"}, "spec": {**TEMPLATE["spec"], "nodeName": "n1"}},
        {
            "phase": "Running",
            "startTime": T0,
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": T0}],
            "containerStatuses": [
                {
                    "name": "c",
                    "ready": False,
                    "restartCount": 0,
                    "image": "pause",
                    "imageID": "",
                    "started": False,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {"terminated": {"exitCode": 0, "startedAt": T0, "finishedAt": T0}},
                }
            ],
        },
    ),
    ("/api/v1/namespaces/dec/podtemplates", {"metadata": {"name": "pt"}, "template": TEMPLATE}, None),
    (
        "/api/v1/namespaces/dec/replicationcontrollers",
        {"metadata": {"name": "rc"}, "spec": {"replicas": 0, "selector": {"app": "d"}, "template": TEMPLATE}},
        None,
    ),
    (
        "/apis/apps/v1/namespaces/dec/deployments",
        {
            "metadata": {"name": "d"},
            "spec": {
                "replicas": 0,
                "selector": SEL,
                "template": TEMPLATE,
                "strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}},
            },
        },
        {
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "lastUpdateTime": T0,
                    "lastTransitionTime": T0,
                    "reason": "MinimumReplicasAvailable",
                    "message": "ok",
                }
            ],
        },
    ),
    (
        "/apis/apps/v1/namespaces/dec/statefulsets",
        {
            "metadata": {"name": "sts"},
            "spec": {
                "serviceName": "headless",
                "replicas": 2,
                "selector": SEL,
                "template": TEMPLATE,
                "podManagementPolicy": "Parallel",
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
                "ordinals": {"start": 3},
            },
        },
        None,
    ),
    (
        "/apis/apps/v1/namespaces/dec/daemonsets",
        {
            "metadata": {"name": "ds"},
            "spec": {
                "selector": SEL,
                "template": TEMPLATE,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}},
            },
        },
        None,
    ),
    (
        "/apis/apps/v1/namespaces/dec/controllerrevisions",
        {"metadata": {"name": "cr"}, "data": {"spec": {"template": {"x": [1, "two", None]}}}, "revision": 7},
        None,
    ),
    (
        "/apis/batch/v1/namespaces/dec/jobs",
        {
            "metadata": {"name": "job"},
            "spec": {
                "parallelism": 2,
                "completions": 4,
                "backoffLimit": 1,
                "activeDeadlineSeconds": 600,
                "ttlSecondsAfterFinished": 30,
                "completionMode": "Indexed",
                "suspend": True,
                "podFailurePolicy": {
                    "rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]
                },
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
                },
            },
        },
        None,
    ),
    (
        "/apis/batch/v1/namespaces/dec/cronjobs",
        {
            "metadata": {"name": "cj"},
            "spec": {
                "schedule": "*/5 * * * *",
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 0,
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [{"name": "c", "image": "b"}],
                            }
                        }
                    }
                },
            },
        },
        None,
    ),
    (
        "/api/v1/persistentvolumes",
        {
            "metadata": {"name": "pv"},
            "spec": {
                "capacity": {"storage": "5Gi"},
                "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": "/data", "type": "DirectoryOrCreate"},
                "mountOptions": ["hard"],
                "volumeMode": "Filesystem",
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}
                                ]
                            }
                        ]
                    }
                },
            },
        },
        {"phase": "Available", "lastPhaseTransitionTime": T0},
    ),
    (
        "/api/v1/namespaces/dec/persistentvolumeclaims",
        {
            "metadata": {"name": "pvc"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1500Mi"}},
                "storageClassName": "",
                "volumeName": "pv",
            },
        },
        {"phase": "Bound", "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"]},
    ),
    (
        "/api/v1/namespaces/dec/endpoints",
        {
            "metadata": {"name": "svc"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}],
        },
        None,
    ),
    (
        "/apis/discovery.k8s.io/v1/namespaces/dec/endpointslices",
        {
            "metadata": {"name": "svc-1"},
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["10.0.0.1"],
                    "conditions": {"ready": False, "serving": True, "terminating": False},
                    "hints": {"forZones": [{"name": "z"}]},
                }
            ],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
        None,
    ),
    (
        "/api/v1/namespaces/dec/serviceaccounts",
        {"metadata": {"name": "sa"}, "automountServiceAccountToken": False},
        None,
    ),
    (
        "/api/v1/namespaces/dec/limitranges",
        {
            "metadata": {"name": "lr"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}, "max": {"memory": "1Gi"}}]},
        },
        None,
    ),
    (
        "/api/v1/namespaces/dec/resourcequotas",
        {"metadata": {"name": "rq"}, "spec": {"hard": {"pods": "10"}}},
        None,
    ),
    (
        "/api/v1/namespaces/dec/events",
        {
            "metadata": {"name": "ev"},
            "involvedObject": {"kind": "Pod", "namespace": "dec", "name": "p", "apiVersion": "v1"},
            "reason": "Test",
            "message": "m",
            "source": {"component": "t", "host": "n1"},
            "firstTimestamp": T0,
            "lastTimestamp": T0,
            "count": 2,
            "type": "Normal",
            "eventTime": MICRO,
            "series": {"count": 2, "lastObservedTime": MICRO},
            "action": "A",
            "reportingComponent": "t",
            "reportingInstance": "t-1",
        },
        None,
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "metadata": {"name": "dec-agg"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "dec"}}]},
        },
        None,
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/dec/roles",
        {
            "metadata": {"name": "r"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"], "resourceNames": ["p"]},
                {"nonResourceURLs": [], "apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]},
            ],
        },
        None,
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/namespaces/dec/rolebindings",
        {
            "metadata": {"name": "rb"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "dec"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        },
        None,
    ),
    (
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        {"metadata": {"name": "vwc"}, "webhooks": [WEBHOOK]},
        None,
    ),
    (
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        {"metadata": {"name": "mwc"}, "webhooks": [{**WEBHOOK, "reinvocationPolicy": "IfNeeded"}]},
        None,
    ),
    (
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        {
            "metadata": {"name": "vap"},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [{"expression": "object.spec.replicas <= 5", "message": "too many"}],
            },
        },
        None,
    ),
    (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        {
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": CRD_SCHEMA},
                        "subresources": {
                            "status": {},
                            "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"},
                        },
                        "additionalPrinterColumns": [
                            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                        ],
                    }
                ],
            },
        },
        None,
    ),
    (
        "/apis/apiregistration.k8s.io/v1/apiservices",
        {
            "metadata": {"name": "v1alpha1.dec.example.com"},
            "spec": {
                "group": "dec.example.com",
                "version": "v1alpha1",
                "service": {"namespace": "dec", "name": "svc", "port": 443},
                "caBundle": CA,
                "groupPriorityMinimum": 100,
                "versionPriority": 10,
            },
        },
        None,
    ),
    (
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        {"metadata": {"name": "dec-low"}, "value": 0, "globalDefault": False, "description": "d"},
        None,
    ),
    (
        "/apis/node.k8s.io/v1/runtimeclasses",
        {
            "metadata": {"name": "rc"},
            "handler": "runc",
            "overhead": {"podFixed": {"cpu": "10m"}},
            "scheduling": {"nodeSelector": {"a": "b"}, "tolerations": [{"operator": "Exists"}]},
        },
        None,
    ),
    (
        "/apis/coordination.k8s.io/v1/namespaces/dec/leases",
        {
            "metadata": {"name": "l"},
            "spec": {
                "holderIdentity": "h",
                "leaseDurationSeconds": 15,
                "acquireTime": MICRO,
                "renewTime": MICRO,
            },
        },
        None,
    ),
    (
        "/apis/storage.k8s.io/v1/namespaces/dec/csistoragecapacities",
        {
            "metadata": {"name": "cap"},
            "storageClassName": "standard",
            "capacity": "10Gi",
            "maximumVolumeSize": "1Ti",
            "nodeTopology": {"matchLabels": {"topology.kubernetes.io/zone": "z"}},
        },
        None,
    ),
    (
        "/apis/storage.k8s.io/v1/csidrivers",
        {
            "metadata": {"name": "csi.example.com"},
            "spec": {
                "attachRequired": False,
                "podInfoOnMount": True,
                "volumeLifecycleModes": ["Persistent"],
                "fsGroupPolicy": "File",
            },
        },
        None,
    ),
    (
        "/apis/storage.k8s.io/v1/storageclasses",
        {
            "metadata": {"name": "sc"},
            "provisioner": "csi.example.com",
            "allowVolumeExpansion": True,
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "z", "values": ["a"]}]}],
        },
        None,
    ),
    (
        "/apis/policy/v1/namespaces/dec/poddisruptionbudgets",
        {"metadata": {"name": "pdb"}, "spec": {"minAvailable": "50%", "selector": SEL}},
        None,
    ),
    (
        "/apis/autoscaling/v2/namespaces/dec/horizontalpodautoscalers",
        {
            "metadata": {"name": "hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 60},
                        },
                    }
                ],
                "behavior": {
                    "scaleDown": {
                        "stabilizationWindowSeconds": 60,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}],
                    }
                },
            },
        },
        None,
    ),
    (
        "/apis/networking.k8s.io/v1/namespaces/dec/networkpolicies",
        {
            "metadata": {"name": "np"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                        "ports": [{"port": 80}],
                    }
                ],
                "egress": [{"ports": [{"protocol": "UDP", "port": 53, "endPort": 54}]}],
            },
        },
        None,
    ),
    (
        "/apis/networking.k8s.io/v1/namespaces/dec/ingresses",
        {
            "metadata": {"name": "ing"},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["a.example.com"], "secretName": "s"}],
                "rules": [
                    {
                        "host": "a.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "svc", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ],
            },
        },
        None,
    ),
    (
        "/apis/events.k8s.io/v1/namespaces/dec/events",
        {
            "metadata": {"name": "ev2"},
            "eventTime": MICRO,
            "reportingController": "t",
            "reportingInstance": "t-1",
            "action": "A",
            "reason": "R",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "dec"},
            "note": "n",
            "type": "Warning",
        },
        None,
    ),
    (
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        {
            "metadata": {"name": "csr"},
            "spec": {
                "request": "CSR",  # filled in by _csr()
                "signerName": "example.com/signer",
                "usages": ["client auth"],
                "expirationSeconds": 3600,
            },
        },
        None,
    ),
]


def _csr() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dec")])
    req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return base64.b64encode(req.public_bytes(serialization.Encoding.PEM)).decode()


def _leaves(obj: Any, path: str = "") -> dict[str, Any]:
    """Leaf path → value (an empty object or list is a leaf of its own)."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{path}.{k}"))
        return out
    if isinstance(obj, list) and obj:
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{path}[{i}]"))
        return out
    return {path: obj}


def _equal(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b) if not isinstance(a, (int, float)) or isinstance(a, bool) else a == b


def compare(decoded: dict[str, Any], served: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(served leaves, of them named and equal in ``decoded``, problems): extra decoded leaves count too."""
    served = {**served, "metadata": {k: v for k, v in served["metadata"].items() if k != "resourceVersion"}}
    s, d = _leaves(served), _leaves(decoded)
    good = sum(1 for p, v in s.items() if p in d and _equal(d[p], v))
    problems = [
        f"{p}: decoded {d.get(p, '<missing>')!r} != served {v!r}"
        for p, v in s.items()
        if not (p in d and _equal(d[p], v))
    ]
    problems += [f"{p}: decoded {v!r}, not served" for p, v in d.items() if p not in s]
    return len(s) + sum(1 for p in d if p not in s), good, problems


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = _kube_apiserver()
    if binary is None or not os.access(binary, os.X_OK):
        pytest.skip("no kube-apiserver binary (k8sstate binaries install, or set K8SSTATE_KUBE_APISERVER)")
    server = _Apiserver(tmp_path_factory.mktemp("apiserver"), binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _served_by_uid(apiserver: _Apiserver) -> dict[str, tuple[str, dict[str, Any]]]:
    """uid → (group/version, item) of every listable resource in every served group version."""
    gvs = ["v1"]
    for g in apiserver.request("GET", "/apis")["groups"]:
        gvs += [v["groupVersion"] for v in g["versions"]]
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for gv in gvs:
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        if gv.startswith("dec.example.com/"):
            continue  # the APIService created here points at no real server
        for r in apiserver.request("GET", base)["resources"]:
            if "/" in r["name"] or "list" not in r.get("verbs", []):
                continue
            for item in apiserver.request("GET", f"{base}/{r['name']}").get("items", []):
                uid = item.get("metadata", {}).get("uid")
                if uid:
                    out.setdefault(f"{uid} {gv}", (gv, {"apiVersion": gv, "kind": r["kind"], **item}))
    return out


@pytest.mark.slow
def test_every_stored_object_decodes_to_the_json_the_apiserver_serves(apiserver: _Apiserver) -> None:
    assert active_schema() is not None, "descriptors not available"
    for collection, obj, status in OBJECTS:
        if obj["metadata"]["name"] == "csr":
            obj = {**obj, "spec": {**obj["spec"], "request": _csr()}}
        created = apiserver.request("POST", collection, obj)
        if status is not None:
            apiserver.request(
                "PATCH", f"{collection}/{created['metadata']['name']}/status", {"status": status}
            )
    _wait_crd(apiserver)
    apiserver.request(
        "POST",
        "/apis/example.com/v1/namespaces/dec/widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}},
    )
    for _ in range(10):  # until nothing (the CRD's status controller) writes between the list and the capture
        served = _served_by_uid(apiserver)
        state = collect_etcd(apiserver.etcd.target, include_secrets=True, keep_raw=True)
        if state.revision == max(int(o["metadata"]["resourceVersion"]) for _, o in served.values()):
            break
    total = good = 0
    kinds: set[str] = set()
    problems: list[str] = []
    unnamed = []
    old_total = old_good = 0
    for key, entry in state.entries.items():
        d = entry.decoded
        assert d.error is None, (key, d.error)
        if d.encoding == "protobuf" and (
            '"#' in json.dumps(d.fields) or "apiVersion" not in (d.fields or {})
        ):
            unnamed.append(key)  # every stored built-in kind is described, every field named
        if d.uid is None or d.fields is None:
            continue
        hit = served.get(f"{d.uid} {d.api_version}")
        if hit is None:
            continue  # not served in its storage version (or not listable)
        _, obj = hit
        if int(obj["metadata"]["resourceVersion"]) != entry.mod_revision:
            continue  # changed between the list and the capture
        n, ok, probs = compare(d.fields, obj)
        total += n
        good += ok
        if d.encoding == "protobuf" and entry.raw_b64:  # the same value through the generic decoder
            old = decode_protobuf(key, base64.b64decode(entry.raw_b64), None).fields or {}
            old_n, old_ok, _ = compare({"apiVersion": d.api_version, "kind": d.kind, **old}, obj)
            old_total, old_good = old_total + old_n, old_good + old_ok
        else:
            old_total, old_good = old_total + n, old_good + ok
        kinds.add(f"{d.api_version} {d.kind}")
        problems += [f"{key} {p}" for p in probs]
    assert not unnamed
    ratio = good / total
    print(
        f"\nfull decoding: {good}/{total} leaf fields named and equal ({ratio:.4%}) over {len(kinds)} kinds;"
        f" {len(state.entries)} values stored, every protobuf one fully named; the generic decoder (before):"
        f" {old_good}/{old_total} ({old_good / old_total:.1%})"
    )
    print("\n".join(problems[:60]))
    if os.environ.get("K8SSTATE_DECODE_DUMP"):
        with open(os.environ["K8SSTATE_DECODE_DUMP"], "w") as fh:
            json.dump(
                {
                    k: [e.decoded.fields, served.get(f"{e.decoded.uid} {e.decoded.api_version}")]
                    for k, e in state.entries.items()
                },
                fh,
            )
    for kind in (
        "apps/v1 Deployment",
        "apps/v1 StatefulSet",
        "apps/v1 DaemonSet",
        "apps/v1 ControllerRevision",
        "batch/v1 Job",
        "batch/v1 CronJob",
        "v1 PersistentVolume",
        "v1 PersistentVolumeClaim",
        "v1 PodTemplate",
        "admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration",
        "apiregistration.k8s.io/v1 APIService",
        "node.k8s.io/v1 RuntimeClass",
        "storage.k8s.io/v1 CSIStorageCapacity",
        "rbac.authorization.k8s.io/v1 ClusterRole",
        "flowcontrol.apiserver.k8s.io/v1 FlowSchema",
        "certificates.k8s.io/v1 CertificateSigningRequest",
        "example.com/v1 Widget",
    ):
        assert kind in kinds, sorted(kinds)
    assert ratio >= 0.99, "\n".join(problems)
    # the known deviations are in what is stored, not in the decoding: the apiserver adds them when serving
    job_raw = base64.b64decode(state.entries["/registry/jobs/dec/job"].raw_b64 or "")
    stored_meta = wire_tree(job_raw[4:])["#2"]["#1"]  # envelope raw → ObjectMeta, read generically
    assert stored_meta["#1"] == "job"
    assert "#11" not in stored_meta  # no labels stored (the template's are)
    sts_raw = base64.b64decode(state.entries["/registry/statefulsets/dec/sts"].raw_b64 or "")
    assert b"PersistentVolumeClaim" not in sts_raw
    # CRDs are stored as apiextensions.k8s.io/v1beta1 but served as v1 only: compare the parts both share
    crd = state.entries[
        "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"
    ].decoded
    served_crd = apiserver.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    assert crd.api_version == "apiextensions.k8s.io/v1beta1"
    assert crd.fields is not None
    spec = crd.fields["spec"]
    assert (
        spec["validation"]["openAPIV3Schema"]
        == served_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    )
    assert spec["names"] == served_crd["spec"]["names"]
    assert spec["subresources"] == served_crd["spec"]["versions"][0]["subresources"]
    assert crd.fields["status"]["conditions"] == served_crd["status"]["conditions"]
    assert "#" not in json.dumps(crd.fields)


def _wait_crd(apiserver: _Apiserver) -> None:
    from pytest_k8sstate.errors import ProviderError
    from pytest_k8sstate.util.poll import wait_until

    def established() -> str | None:
        crd = apiserver.request(
            "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
        )
        conds = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        if conds.get("Established") != "True":
            return f"conditions {conds}"
        try:
            apiserver.request("GET", "/apis/example.com/v1")
        except AssertionError as exc:
            return str(exc)[:200]
        return None

    wait_until("CRD widgets.example.com established", established, timeout=60, error=ProviderError)
