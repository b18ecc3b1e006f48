"""Finding 13: an ExternalName Service is one etcd key: no endpoints, no netfilter rule."""

from __future__ import annotations

import pytest

from .helpers import (
    added_keys,
    foreign_netfilter_changes,
    manifest,
    node_names,
    sep_chain,
    split_events,
    svc_chain,
    wait_proxy_endpoints,
    without_noise,
)


@pytest.mark.k8sstate_finding(13, "ExternalName Service: a service key, no endpoints, no netfilter rule")
def test_finding_13_externalname_is_only_a_key(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Service ExternalName': "Services of type ExternalName map a Service to a DNS
    name, not to a typical selector ... When looking up the host my-service.prod.svc.cluster.local, the
    cluster DNS Service returns a CNAME record with the value my.database.example.com". Section 'Cluster
    IP': "kube-proxy is responsible for implementing a form of virtual IP for Services of type other than
    ExternalName".

    Checked: creating ``f13-db`` (externalName my.database.example.com) adds exactly
    ``/registry/services/specs/default/f13-db`` — no ``services/endpoints``, no ``endpointslices``, no
    ``ipaddresses`` key; once a later ordinary barrier Service is programmed on every node, every
    netfilter change on every node belongs to the barrier.

    Real cluster vs article: the CNAME answer needs CoreDNS actually running; the ``local`` provider's
    CoreDNS pods are simulated, so the DNS half is not checked here.
    """
    k8s_api.apply(manifest("13-externalname.yaml"))
    k8s_api.apply(manifest("13-barrier.yaml"))
    k8s_api.wait_endpoints("svc/f13-barrier", count=1)
    wait_proxy_endpoints(k8s_cluster, "default/f13-barrier", 1)
    diff = cluster_state.diff()

    _events, keys = split_events(without_noise(added_keys(diff)))
    ours = [k for k in keys if "f13-db" in k]
    assert ours == ["/registry/services/specs/default/f13-db"], ours
    svc = k8s_api.get("svc/f13-db")
    assert svc["spec"]["type"] == "ExternalName"
    assert "clusterIP" not in svc["spec"]
    assert k8s_api.try_get("endpoints/f13-db") is None

    barrier = "default/f13-barrier:http"
    pod_ip = k8s_api.pod_ip("f13-barrier")
    marks = ["f13-barrier", svc_chain(barrier), sep_chain(barrier, f"{pod_ip}:8080")]
    for node in node_names(k8s_cluster):
        assert foreign_netfilter_changes(diff.nodes[node], marks) == [], node
