"""Named fields for the kinds tests assert on most: a hand-written table of field numbers and converters.

Field numbers come from k8s.io/api's generated.proto files (core/v1, apps/v1, discovery/v1,
coordination/v1, meta/v1); ``tests/test_etcd.py`` checks them against what a real kube-apiserver stores.
:func:`named` renames the ``#N`` keys of a generic wire tree (:mod:`.wire`) after a message of the table;
fields the table does not know keep their number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pytest_k8sstate.etcd.decode.meta import rfc3339
from pytest_k8sstate.etcd.decode.wire import WireError, parse_message

__all__ = ["DEFAULT_TOP", "NAMED_KINDS", "SCHEMAS", "TOP_LEVEL_NAMES", "field_names", "named"]

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
DEFAULT_TOP = {2: "spec", 3: "status"}


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
            return parse_message(b, 0, len(b), 1)
        except WireError:
            return v
    return v


def _to_message(msg: str, v: Any) -> Any:
    return named(_as_message(v), msg)


def _to_bool(v: Any) -> Any:
    return bool(v) if isinstance(v, int) else v


def _to_time(v: Any) -> Any:
    v = _as_message(v)
    if isinstance(v, dict) and v.keys() <= {"#1", "#2"}:
        secs, nanos = v.get("#1", 0), v.get("#2", 0)
        if isinstance(secs, int) and isinstance(nanos, int):
            return rfc3339(secs, nanos)
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


def named(tree: Any, msg: str) -> Any:
    """Rename ``#N`` keys of ``tree`` (a generic message) after schema ``msg``; unknown fields stay ``#N``."""
    schema = SCHEMAS.get(msg)
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


SCHEMAS = _parse_schema(_SCHEMA_TEXT)


def field_names(msg: str) -> dict[str, str | None]:
    """The field names the table gives message ``msg`` → the message type of each (None: a scalar or map).

    Names and structure only, no numbers: tests walk the JSON the apiserver serves with it to check the
    numbers against reality.
    """
    out: dict[str, str | None] = {}
    for item in _SCHEMA_TEXT.get(msg, "").split(";"):
        if item.strip():
            _, name, typ = item.split()
            out[name] = typ[2:] if typ.startswith("M:") else None
    return out
