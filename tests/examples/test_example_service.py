"""The README example: a Pod and a ClusterIP Service, checked in etcd and in every node's rules.

Run: ``pytest tests/examples`` (the plugin creates a local cluster; ``--k8sstate-provider kind`` for kind).
Manifests: ``manifests/web-pod.yaml`` (pod ``web``, port 8080) and ``manifests/web-service.yaml``
(ClusterIP port ``http`` 80 -> 8080), without a namespace: ``k8s_api`` applies them into the test's own
namespace (``k8sstate_namespace``).
"""

from __future__ import annotations

from pytest_k8sstate import assert_dnat_to, assert_new_keys, pod_ip


def test_service_creates_dnat(cluster_state, k8s_api, k8sstate_namespace):  # type: ignore[no-untyped-def]
    ns = k8sstate_namespace
    k8s_api.apply("web-pod.yaml")
    k8s_api.wait_ready("pod/web")
    k8s_api.apply("web-service.yaml")
    k8s_api.wait_endpoints("svc/web")
    cluster_state.eventually(  # kube-proxy syncs asynchronously: re-snapshot until it holds
        lambda snap: assert_dnat_to(snap, f"{ns}/web:http", endpoints=[pod_ip(k8s_api, "web") + ":8080"])
    )
    diff = cluster_state.diff(namespace=ns)  # only this test's objects
    assert_new_keys(diff, [f"/registry/services/specs/{ns}/web", f"/registry/endpointslices/{ns}/web-*"])


def test_service_adds_kube_proxy_chains(cluster_state, k8s_api, k8sstate_namespace):  # type: ignore[no-untyped-def]
    """The same scenario, also asserting the chains every node's kube-proxy adds for the Service."""
    from pytest_k8sstate.assertions import assert_new_chains

    ns = k8sstate_namespace
    k8s_api.apply("web-pod.yaml")
    k8s_api.apply("web-service.yaml")
    k8s_api.wait_endpoints("svc/web", count=1)
    ip = pod_ip(k8s_api, "web")
    cluster_state.eventually(lambda snap: assert_dnat_to(snap, f"{ns}/web", endpoints=[f"{ip}:8080"]))
    diff = cluster_state.diff()
    assert_new_keys(diff, [f"/registry/pods/{ns}/web", f"/registry/services/specs/{ns}/web"])
    assert_new_chains(diff, ["KUBE-SVC-*", "KUBE-SEP-*"])
