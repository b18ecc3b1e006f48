"""Finding 1: what a fresh cluster holds before anything is created."""

from __future__ import annotations

import pytest

from pytest_k8sstate.assertions import assert_dnat_to

BASE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


_PY_GET = (
    "import json,socket,ssl,sys;"
    "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE;"
    "s=c.wrap_socket(socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10));"
    "s.sendall(b'GET /version HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n');"
    "d=b''.join(iter(lambda:s.recv(65536),b''));print(d.split(b'\\r\\n\\r\\n',1)[1].decode())"
)


def _get_version_from_node(node_exec, ip: str, port: int) -> str:
    """GET https://ip:port/version from inside the node (curl, else python3): the apiserver answers JSON."""
    if node_exec.which("curl"):
        return str(node_exec.run(["curl", "-sk", "--max-time", "10", f"https://{ip}:{port}/version"]).text)
    if node_exec.which("python3"):
        return str(node_exec.run(["python3", "-c", _PY_GET, ip, str(port)]).text)
    pytest.fail(f"node {node_exec.node} has neither curl nor python3 to reach {ip}:{port}")


def _endpoint_ips(endpoints: dict) -> list[str]:
    return sorted(a["ip"] for s in endpoints.get("subsets") or [] for a in s.get("addresses") or [])


@pytest.mark.k8sstate_finding(
    1, "base cluster: namespaces, the kubernetes Service → apiserver, kube-dns at 10.96.0.10"
)
def test_finding_01_base_cluster(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), section 'Resources of the base cluster': "there are many keys ... roles,
    namespaces, certificates/config maps, control-plane pods and the CoreDNS deployment are created".
    Seed 002, section 'ClusterIP': "In every namespace there is a ClusterIP that gives access to the
    api-server ... Name: kubernetes, Namespace: default, Labels: component=apiserver provider=kubernetes".
    Seed 002, section 'Resolv.conf and ndots problem': "nameserver 10.96.0.10" (the kube-dns Service).

    Checked in the fresh cluster's etcd (the ``before`` snapshot): the four base namespaces, the
    ``kubernetes`` Service with exactly those labels, its endpoint = the address the apiserver registered
    itself under (``/registry/masterleases/<ip>``), and the kube-dns Service at 10.96.0.10. Every node's
    kube-proxy DNATs 10.96.0.1:443 to that endpoint.

    Real cluster vs article: the article lists the keys only by category; here they are named. The apiserver
    also writes an EndpointSlice ``kubernetes`` (the article predates EndpointSlices being the source
    kube-proxy reads).
    """
    snap = cluster_state.before
    keys = set(snap.etcd.entries)
    for ns in BASE_NAMESPACES:
        assert f"/registry/namespaces/{ns}" in keys, f"namespace {ns} missing from etcd"

    svc_key = "/registry/services/specs/default/kubernetes"
    assert svc_key in keys
    labels = snap.etcd.entries[svc_key].decoded.labels
    assert labels == {"component": "apiserver", "provider": "kubernetes"}
    assert "/registry/services/endpoints/default/kubernetes" in keys
    assert "/registry/endpointslices/default/kubernetes" in keys

    # The endpoint is the apiserver: the IP it registered in /registry/masterleases/.
    lease_ips = sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith("/registry/masterleases/"))
    assert lease_ips, "no /registry/masterleases/<ip> key: the apiserver did not register its address"
    endpoints = k8s_api.get("endpoints/kubernetes", namespace="default")
    assert _endpoint_ips(endpoints) == lease_ips
    port = endpoints["subsets"][0]["ports"][0]["port"]
    svc = k8s_api.get("service/kubernetes", namespace="default")
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    assert_dnat_to(snap, dst="10.96.0.1:443", endpoints=[f"{ip}:{port}" for ip in lease_ips])
    # ... and what answers there, from inside a node, is a kube-apiserver.
    worker = k8s_cluster.workers[0] if k8s_cluster.workers else k8s_cluster.control_plane
    answer = _get_version_from_node(worker.exec, lease_ips[0], port)
    assert '"gitVersion"' in answer or '"kind": "Status"' in answer, answer[:300]

    dns = k8s_api.get("service/kube-dns", namespace="kube-system")
    assert dns["spec"]["clusterIP"] == "10.96.0.10"
    assert "/registry/services/specs/kube-system/kube-dns" in keys
