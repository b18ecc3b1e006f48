"""Finding 23: a LoadBalancer Service with TCP and UDP on one port is accepted and programmed for both."""

from __future__ import annotations

from fractions import Fraction

import pytest

from .helpers import (
    IN_CLUSTER_SRC,
    OUTSIDE_SRC,
    chain_specs,
    manifest,
    node_names,
    svc_chain,
    trace_on,
    wait_proxy_endpoints,
)


@pytest.mark.k8sstate_finding(
    23, "LoadBalancer Service with TCP+UDP on the same port: accepted, rules for both protocols"
)
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_23_mixed_protocol_loadbalancer(k8s_cluster, cluster_state, k8s_api):
    """Seed 002, section 'Task with ⭐ | DNS via MetalLB': "in fact since version 1.24 several protocols can
    be used for LB services ... the feature is enabled by default and there is no need to create 2 services
    joined by the annotation metallb.universe.tf/allow-shared-ip" —
    ``service/dns-svc-lb LoadBalancer 10.101.92.187 172.17.255.2 53:30821/TCP,53:30821/UDP``.

    Checked: the apiserver accepts ``f23-dns`` (type LoadBalancer, ports 53/TCP and 53/UDP); both ports get
    the same nodePort, as in the seed's output; on every node KUBE-SERVICES has a tcp and a udp rule for the
    ClusterIP port 53, KUBE-NODEPORTS tcp and udp rules for the nodePort, each through its own
    KUBE-SVC-/KUBE-EXT- chain; traced tcp and udp connections to ClusterIP:53 and to nodeIP:nodePort all
    reach the pod's port 5353.

    Real cluster vs article: kube-proxy also accepts each NodePort on 127.0.0.0/8 (an nfacct-counted rule
    per protocol, see finding 5). No load-balancer controller (MetalLB) runs here, so the Service keeps
    ``status.loadBalancer`` empty and no external IP is programmed; everything kube-proxy does for the
    ClusterIP and the NodePorts is checked.
    """
    k8s_api.apply(manifest("23-mixed-protocol-lb.yaml"))
    k8s_api.wait_endpoints("svc/f23-dns", count=1)
    wait_proxy_endpoints(k8s_cluster, "default/f23-dns", 2)  # one DNAT per protocol
    after = cluster_state.snapshot("programmed")
    svc = k8s_api.get("svc/f23-dns")
    ports = {p["protocol"]: p for p in svc["spec"]["ports"]}
    assert sorted(ports) == ["TCP", "UDP"]
    assert {p["port"] for p in ports.values()} == {53}
    assert ports["TCP"]["nodePort"] == ports["UDP"]["nodePort"]
    node_port = ports["TCP"]["nodePort"]
    cluster_ip = svc["spec"]["clusterIP"]
    endpoint = f"{k8s_api.pod_ip('f23-dns')}:5353"

    for node in node_names(k8s_cluster):
        node_ip = k8s_cluster.node(node).ip
        for proto, name in (("tcp", "dns-tcp"), ("udp", "dns-udp")):
            port_id = f"default/f23-dns:{name}"
            to_svc = [
                s
                for s in chain_specs(after, node, "nat", "KUBE-SERVICES")
                if s.endswith(f"-j {svc_chain(port_id, proto)}")
            ]
            assert to_svc == [
                f'-d {cluster_ip}/32 -p {proto} -m comment --comment "{port_id} cluster IP" '
                f"-m {proto} --dport 53 -j {svc_chain(port_id, proto)}"
            ], (node, proto, to_svc)
            ext = svc_chain(port_id, proto, prefix="KUBE-EXT-")
            to_ext = [s for s in chain_specs(after, node, "nat", "KUBE-NODEPORTS") if s.endswith(f"-j {ext}")]
            expected = [
                f'-d 127.0.0.0/8 -p {proto} -m comment --comment "{port_id}" -m {proto} --dport {node_port} '
                f"-m nfacct --nfacct-name  localhost_nps_accepted_pkts -j {ext}",
                f'-p {proto} -m comment --comment "{port_id}" -m {proto} --dport {node_port} -j {ext}',
            ]
            assert to_ext == expected, (node, proto, to_ext)
            for dst, port, src in ((cluster_ip, 53, IN_CLUSTER_SRC), (node_ip, node_port, OUTSIDE_SRC)):
                split = trace_on(after, k8s_cluster, node, dst, port, proto=proto, src=src).endpoints
                assert split == {endpoint: Fraction(1)}, (node, proto, dst, split)
