"""Finding 6: one more node: its Node and Lease keys, and the same kube-proxy rules on every node."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from pytest_k8sstate.assertions import service_rules

from .helpers import chain_specs, manifest, svc_chain, wait_proxy_endpoints

SERVICE = "default/f06-web"
PORT_ID = "default/f06-web:http"


def _normalised(keys, cluster_name: str) -> Counter[str]:
    """Keys with what differs between any two clusters wildcarded — the cluster's name (in node names), the
    apiserver's IP, certificate hashes, generated name suffixes (pods, slices) — so the keys of two clusters
    can be compared; events are left out (their names are random and time-bound)."""
    out: Counter[str] = Counter()
    for key in keys:
        if key.startswith("/registry/events/"):
            continue
        key = key.replace(cluster_name, "<cluster>")
        key = re.sub(r"\b\d+\.\d+\.\d+\.\d+\b", "<ip>", key)  # masterleases/<apiserver IP>
        key = re.sub(r":[0-9a-f]{16,}$", ":*", key)  # clustertrustbundles/…:<hash of the serving CA>
        key = re.sub(r"apiserver-[a-z0-9]{20,}$", "apiserver-*", key)  # apiserver identity leases
        # a DaemonSet's ControllerRevision is named after a hash of its pod template; kind's kindnet template
        # holds CONTROL_PLANE_ENDPOINT=<cluster>-control-plane:6443, so that hash differs between clusters
        key = re.sub(r"^(/registry/controllerrevisions/.+)-[a-z0-9]{8,10}$", r"\1-<hash>", key)
        key = re.sub(r"-[a-z0-9]{5}$", "-*", key)
        out[key] += 1
    return out


def _kube_proxy_rules(snapshot, node: str) -> set[tuple[str, str, str]]:
    rs = snapshot.nodes[node].iptables
    return {
        (t, c, r.spec)
        for t, table in rs.tables.items()
        for c, chain in table.chains.items()
        for r in chain.rules
        if c.startswith("KUBE-") or (r.target or "").startswith("KUBE-")
    }


@pytest.mark.k8sstate_finding(
    6, "a second node: its Node and Lease keys; every node's kube-proxy has the same rules"
)
@pytest.mark.k8sstate(nodes=2, proxy_mode="iptables")
def test_finding_06_second_node(k8s_cluster, k8s_clusters, cluster_state, k8s_api):
    """Seed 000 (article), step 'a cluster with two nodes' (made, like the article, by creating a cluster
    with one more node and comparing): "etcd keys — ... separate components for joining the worker node
    appeared"; "some resources were duplicated for the second worker node"; "the iptables of the nodes were
    changed (master and minion are absolutely identical)". Step 'Service for the Deployment': "the iptables
    of the worker nodes must be synchronised periodically for the traffic to be handled correctly".

    Checked: the etcd keys of a 2-worker cluster minus those of a 1-worker cluster (names normalised)
    are exactly the second worker's Node ``/registry/minions/<cluster>-worker2``, its Lease
    ``/registry/leases/kube-node-lease/<cluster>-worker2`` and one more kube-proxy DaemonSet pod; nothing
    of the 1-worker cluster is missing. In the 2-worker cluster, after a Service is created, every node's
    kube-proxy rules (KUBE-* chains and jumps into them, nat and filter) are identical, and the Service's
    rules are on every node.

    Real cluster vs article: the kindnet half (kindnet DaemonSet, kind-masq-agent rules) belongs to kind:
    ``test_finding_06_kindnet_on_every_node``. The ``local`` provider has no kubeadm join (bootstrap
    token, CSR), so the "components for joining" are only the Node and its Lease.

    On ``kind`` (a real kubelet joined by ``kubeadm join``) the second worker also brings exactly the
    kubelet's ``CSINode`` object ``/registry/csinodes/<cluster>-worker2`` and a ``kindnet`` DaemonSet pod
    (with kindnet), and the kubelet's TLS-bootstrap ``CertificateSigningRequest`` (``csr-…``, approved and
    signed by the controller-manager): every joined worker has at least one; a kubelet restarted during the
    join files a second one (seen once in CI), so CSRs are counted, not matched exactly. DaemonSet
    ControllerRevision names (a hash of the pod template) are wildcarded: kindnet's template names the
    cluster's control-plane endpoint.
    """
    one = k8s_clusters.get(nodes=1, proxy_mode="iptables")
    one_keys = _normalised(one.snapshot("one-worker").etcd.entries, one.name)
    two_keys = _normalised(cluster_state.before.etcd.entries, k8s_cluster.name)
    # kubelet TLS-bootstrap CSRs (kind): at least one per joined worker; a kubelet restarted during
    # `kubeadm join` files another, so their number is compared separately
    csr = "/registry/certificatesigningrequests/csr-*"
    csrs = {"one": one_keys.pop(csr, 0), "two": two_keys.pop(csr, 0)}
    if k8s_cluster.has("kubelet"):
        assert csrs["one"] >= 1, csrs
        assert csrs["two"] >= 2, csrs
    extra = two_keys - one_keys
    expected = Counter(
        {
            "/registry/minions/<cluster>-worker2": 1,
            "/registry/leases/kube-node-lease/<cluster>-worker2": 1,
            "/registry/pods/kube-system/kube-proxy-*": 1,
        }
    )
    if k8s_cluster.has("kubelet"):  # kind: a real kubelet joined with kubeadm (see the docstring)
        expected["/registry/csinodes/<cluster>-worker2"] += 1
    if k8s_cluster.has("kindnet"):
        expected["/registry/pods/kube-system/kindnet-*"] += 1
    assert extra == expected, extra
    assert one_keys - two_keys == Counter(), one_keys - two_keys

    k8s_api.apply(manifest("06-service.yaml"))
    k8s_api.wait_endpoints("svc/f06-web", count=1)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 1)
    after = cluster_state.snapshot("service-programmed")
    nodes = [n.name for n in k8s_cluster.nodes]
    assert len(nodes) == 3
    reference = _kube_proxy_rules(after, nodes[0])
    for node in nodes[1:]:
        assert _kube_proxy_rules(after, node) == reference, node
    rules = service_rules(after, PORT_ID)  # fails unless they are the same on every node
    assert any(svc_chain(PORT_ID) in r for r in rules), rules


@pytest.mark.k8sstate_finding(
    6, "kind: the kindnet DaemonSet runs on every node; kind-masq-agent rules on every node"
)
@pytest.mark.k8sstate_needs("kindnet")
def test_finding_06_kindnet_on_every_node(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), step 'a cluster with two nodes': "since traffic now has to be forwarded beyond
    the node, a daemonSet with kindnet pods was deployed"; "iptables — the rules handling the containers'
    outgoing traffic were removed and replaced by similar kind-masq-agent rules".

    Checked on a kind cluster with ≥ 2 nodes: the ``kube-system/kindnet`` DaemonSet has a ready pod on
    every node (its keys are in etcd), and every node masquerades pod traffic leaving the cluster: the nat
    ``KIND-MASQ-AGENT`` chain (reached from POSTROUTING, ending in MASQUERADE) or, with newer kindnetd, the
    equivalent masquerade rule in its own nftables table.

    Real cluster vs article: the article saw this on minikube's multi-node mode, which also uses kindnet.
    """
    ds = k8s_api.get("ds/kindnet", namespace="kube-system")
    nodes = [n.name for n in k8s_cluster.nodes]
    assert len(nodes) >= 2
    assert ds["status"]["desiredNumberScheduled"] == len(nodes)
    assert ds["status"]["numberReady"] == len(nodes)
    snap = cluster_state.before
    assert "/registry/daemonsets/kube-system/kindnet" in snap.etcd.entries
    pods = [p for p in k8s_api.list("pod", "app=kindnet", namespace="kube-system")]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(nodes)
    for node in nodes:
        masq = chain_specs(snap, node, "nat", "KIND-MASQ-AGENT")
        if masq:  # kindnetd's iptables masq agent
            assert masq[-1].endswith("-j MASQUERADE"), (node, masq)
            postrouting = chain_specs(snap, node, "nat", "POSTROUTING")
            assert any(s.endswith("-j KIND-MASQ-AGENT") for s in postrouting), (node, postrouting)
        else:  # newer kindnetd programs the same masquerading with nftables
            nft = snap.nodes[node].nft
            rules = [
                f"{t.family} {t.name} {c.name}: {r.text}"
                for t in (nft.tables.values() if nft else [])
                for c in t.chains.values()
                for r in c.rules
                if "kindnet" in t.name and "masquerade" in r.text
            ]
            assert rules, f"node {node}: neither a KIND-MASQ-AGENT chain nor a kindnet nft masquerade rule"
