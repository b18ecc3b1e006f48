"""The README example: a Pod and a ClusterIP Service, checked in etcd and in every node's netfilter rules.

Run: ``pytest tests/examples`` (the plugin creates a local cluster; add ``--k8s-provider kind`` for kind).
"""

from __future__ import annotations

from pytest_k8sstate.assertions import assert_dnat_to, assert_new_chains, assert_new_keys
from pytest_k8sstate.k8s import K8sHelper, pod_ip
from pytest_k8sstate.plugin import ClusterState


def test_service_routes_to_pod(k8s: K8sHelper, cluster_state: ClusterState) -> None:
    k8s.apply("web-pod.yaml")  # manifests/web-pod.yaml
    k8s.apply("web-service.yaml")  # ClusterIP, port 80 -> 8080
    k8s.wait_endpoints("svc/web", count=1)
    ip = pod_ip(k8s, "web")

    # every node's kube-proxy DNATs the ClusterIP to the pod (snapshots until its rules are synced)
    cluster_state.eventually(lambda snap: assert_dnat_to(snap, "default/web", endpoints=[f"{ip}:8080"]))

    diff = cluster_state.diff()
    assert_new_keys(
        diff,
        [
            "/registry/pods/default/web",
            "/registry/services/specs/default/web",
            "/registry/endpointslices/default/web-*",
        ],
    )
    assert_new_chains(diff, ["KUBE-SVC-*", "KUBE-SEP-*"])
