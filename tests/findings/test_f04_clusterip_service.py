"""Finding 4: a ClusterIP Service = a few etcd keys + about ten iptables lines on every node."""

from __future__ import annotations

import pytest

from pytest_k8sstate.assertions import (
    assert_conntrack_dnat,
    assert_dnat_to,
    assert_masquerade,
    assert_new_chains,
)

from .helpers import (
    CLUSTER_CIDR,
    IN_CLUSTER_SRC,
    added_keys,
    chain_specs,
    load_manifest,
    manifest,
    node_names,
    sep_chain,
    split_events,
    stores_ipaddresses,
    svc_chain,
    wait_proxy_endpoints,
    without_noise,
)
from .workloads import agnhost_on_nodes, netexec, observe

SERVICE = "default/f04-web"
PORT_ID = "default/f04-web:http"


@pytest.mark.k8sstate_finding(
    4, "ClusterIP Service: specs/endpoints/endpointslices keys; KUBE-SERVICES→SVC→SEP DNAT"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_04_clusterip_service(k8s_cluster, cluster_state, k8s_api):
    """Seed 000 (article), step 'a Service for the Pod': "etcd keys — new endpointslices, endpoints and
    service specs appeared"; "iptables — new rules appeared that redirect the traffic going to the
    service into the corresponding Pod"; "from which one can conclude that a service is 10 lines in
    iptables that kube-proxy looks after".
    Seed 001, section 'Kube-proxy': ``-A KUBE-SERVICES -d <ClusterIP>/32 -p tcp ... --dport 80 -j
    KUBE-SVC-…``, then ``KUBE-SVC-…`` → ``KUBE-SEP-…`` → ``-j DNAT --to-destination <podIP>:<port>``.
    Seed 002, section 'ClusterIP': ``KUBE-MARK-MASQ tcp !10.244.0.0/16 → <ClusterIP> /* default/web-svc-cip
    cluster IP */``.

    Checked between "pod ready" and "service programmed": the new etcd keys are exactly
    ``/registry/services/specs/default/f04-web``, ``/registry/services/endpoints/default/f04-web``, one
    ``/registry/endpointslices/default/f04-web-…`` (and the Service's ``/registry/ipaddresses/<ClusterIP>``,
    see below) plus events; on every node the chains ``KUBE-SVC-<hash>``/``KUBE-SEP-<hash>`` named by
    kube-proxy's hashing appear, KUBE-SERVICES matches the ClusterIP and jumps to KUBE-SVC, KUBE-SVC marks
    ``! -s 10.244.0.0/16`` for masquerade and jumps to KUBE-SEP, KUBE-SEP DNATs to podIP:8080 (and marks
    hairpin traffic); the traced connection reaches the pod. The "ten lines" are counted.

    Real cluster vs article:
    - Kubernetes ≥ 1.33 also stores an ``IPAddress`` object per ClusterIP (``/registry/ipaddresses/<ip>``,
      MultiCIDRServiceAllocator); the test expects it exactly when the cluster's own ``kubernetes`` Service
      has one.
    - kube-proxy ≥ 1.25 puts the ``! -s 10.244.0.0/16 -j KUBE-MARK-MASQ`` rule at the top of KUBE-SVC-…,
      not in KUBE-SERVICES as in the article's dump.
    - "about ten lines": a ClusterIP Service with one endpoint is 5 rules + 2 chain declarations = 7 lines
      of ``iptables-save``; the article's minikube Service also had a NodePort (its own chain and rules),
      which makes 12 lines on current kube-proxy (finding 5).
    """
    k8s_api.apply(manifest("04-pod.yaml"))
    k8s_api.wait_ready("pod/f04-web")
    pod_only = cluster_state.snapshot("pod-ready")

    k8s_api.apply(manifest("04-service.yaml"))
    k8s_api.wait_endpoints("svc/f04-web", count=1)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 1)
    diff = cluster_state.diff(since="pod-ready")
    after = cluster_state.after

    cluster_ip = k8s_api.get("svc/f04-web")["spec"]["clusterIP"]
    pod_ip = k8s_api.get("pod/f04-web")["status"]["podIP"]
    endpoint = f"{pod_ip}:8080"

    # etcd
    _events, keys = split_events(without_noise(added_keys(diff)))
    expected = [
        "/registry/services/endpoints/default/f04-web",
        "/registry/services/specs/default/f04-web",
    ]
    if stores_ipaddresses(pod_only):
        expected.append(f"/registry/ipaddresses/{cluster_ip}")
    slices = [k for k in keys if k.startswith("/registry/endpointslices/default/f04-web-")]
    assert len(slices) == 1, keys
    assert sorted(keys) == sorted([*expected, *slices])

    # iptables, on every node
    svc, sep = svc_chain(PORT_ID), sep_chain(PORT_ID, endpoint)
    assert_new_chains(diff, [svc, sep], table="nat")
    for node in node_names(k8s_cluster):
        nd = diff.nodes[node]
        assert sorted(nd.chains_added) == sorted([("nat", svc), ("nat", sep)]), (node, nd.chains_added)
        services = [s for s in chain_specs(after, node, "nat", "KUBE-SERVICES") if s.endswith(f"-j {svc}")]
        assert services == [
            f'-d {cluster_ip}/32 -p tcp -m comment --comment "{PORT_ID} cluster IP" -m tcp --dport 80 '
            f"-j {svc}"
        ], (node, services)
        assert chain_specs(after, node, "nat", svc) == [
            f'! -s {CLUSTER_CIDR} -d {cluster_ip}/32 -p tcp -m comment --comment "{PORT_ID} cluster IP" '
            f"-m tcp --dport 80 -j KUBE-MARK-MASQ",
            f'-m comment --comment "{PORT_ID} -> {endpoint}" -j {sep}',
        ], node
        assert chain_specs(after, node, "nat", sep) == [
            f'-s {pod_ip}/32 -m comment --comment "{PORT_ID}" -j KUBE-MARK-MASQ',
            f'-p tcp -m comment --comment "{PORT_ID}" -m tcp -j DNAT --to-destination {endpoint}',
        ], node
        # "a service is about ten lines": rules + chain declarations this Service added
        added_rules = [r for r in nd.rules_added if r[0] in ("nat", "filter")]
        assert len(added_rules) == 5, (node, added_rules)
        assert len(added_rules) + len(nd.chains_added) == 7
        assert not nd.rules_removed, node
        assert not nd.chains_removed, node

    assert_dnat_to(after, service=PORT_ID, endpoints=[endpoint])
    assert_masquerade(after, service=PORT_ID)  # from outside the cluster CIDR: masqueraded
    assert_masquerade(after, service=PORT_ID, src=IN_CLUSTER_SRC, expected=False)


@pytest.mark.k8sstate_finding(
    4, "observed: connections to the ClusterIP reach the pod, masqueraded as traced; conntrack holds the DNAT"
)
@pytest.mark.k8sstate_needs("container-runtime")
@pytest.mark.k8sstate_conntrack
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_04_observed_clusterip_reaches_the_pod(k8s_cluster, cluster_state, k8s_api):
    """The observed half of finding 4 ("rules that redirect the traffic going to the service into the
    corresponding Pod"): the same Pod, now an agnhost ``netexec`` on port 8080, and Service. 20 real
    connections from a node to ``<ClusterIP>:80`` all reach ``f04-web`` (the trace: DNAT to podIP:8080,
    probability 1, masqueraded from a node), and the pod saw one of the node's addresses, as the
    masquerade predicts. Evidence from the kernel: the node's conntrack table (captured with
    ``@pytest.mark.k8sstate_conntrack``) has the connections' DNAT tuple — original ``node → ClusterIP:80``,
    reply ``podIP:8080 → node`` (source rewritten too: masqueraded).
    """
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(netexec(load_manifest("04-pod.yaml"), tag))
    k8s_api.wait_ready("pod/f04-web")
    k8s_api.apply(manifest("04-service.yaml"))
    k8s_api.wait_endpoints("svc/f04-web", count=1)
    wait_proxy_endpoints(k8s_cluster, SERVICE, 1)
    snap = cluster_state.snapshot("programmed")
    cluster_ip = k8s_api.cluster_ip("svc/f04-web")
    pod_ip = k8s_api.pod_ip("f04-web")
    node = node_names(k8s_cluster)[0]

    observed, _ = observe(k8s_cluster, snap, f"{SERVICE}:80", source=f"node/{node}", node=node, count=20)
    assert observed.counts() == {"f04-web": 20}, observed.connections[:3]
    assert observed.backend_ips == {"f04-web": pod_ip}

    probed = cluster_state.snapshot("probed")
    node_ip = k8s_cluster.node(node).ip
    entries = assert_conntrack_dnat(probed, cluster_ip, 80, to=f"{pod_ip}:8080", node=node, src=node_ip)
    assert all(e.snat for e in entries), [str(e) for e in entries]  # masqueraded, as traced
