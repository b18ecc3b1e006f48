"""Finding 32: a hostPort is the CNI's ``portmap`` plugin, not kube-proxy: per-pod nat chains on the Pod's
node only, DNAT of ``<nodeIP>:<hostPort>`` to ``<podIP>:<containerPort>``, removed again by CNI DEL.

Facts (read in containernetworking/plugins ``plugins/meta/portmap``; the kind node image runs Debian's
``containernetworking-plugins`` 1.1.1, whose portmap has only the iptables backend — the test asserts what
that binary writes, read from the node's captured rules):

* ``CNI-HOSTPORT-DNAT`` is jumped to from nat ``PREROUTING`` and ``OUTPUT`` for local destination addresses
  (``-m addrtype --dst-type LOCAL``), appended after kube-proxy's jump;
* per Pod one chain ``CNI-DN-`` + the first 21 hex digits of sha512(network name + sandbox ID), reached from
  ``CNI-HOSTPORT-DNAT`` by ``-m multiport --dports <hostPort>`` with the comment
  ``dnat name: "<network>" id: "<sandbox>"``; it holds two SETMARK rules (source = the pod's subnet:
  hairpin; source 127.0.0.1: localhost) and the DNAT to ``<podIP>:8080``;
* ``CNI-HOSTPORT-SETMARK`` sets mark 0x2000 (bit 13), ``CNI-HOSTPORT-MASQ`` — *prepended* to nat
  ``POSTROUTING`` — masquerades what carries it;
* CNI DEL deletes the per-pod chain and its jump; the three shared chains stay.

Only marked connections are masqueraded: a client on another node or outside the nodes reaches the pod
with its own source address (unlike a NodePort, finding 5). kube-proxy has no Service to program and
writes nothing, in ``iptables`` and ``nftables`` mode alike; portmap writes iptables rules (iptables-nft's
``ip nat`` table) whatever kube-proxy's mode.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from typing import Any

import pytest

from pytest_k8sstate.assertions import assert_no_netfilter_change
from pytest_k8sstate.traffic import probe

from .helpers import OUTSIDE_SRC, chain_specs, load_manifest, netfilter_changes, trace_on
from .workloads import agnhost_on_nodes, crictl_json, kubectl, netexec, observe, probe_from_outside

POD = "f32-web"
HOST_PORT = 18032
CONTAINER_PORT = 8080
MARK = "0x2000/0x2000"  # portmap's default markMasqBit 13
TOP = {
    "CNI-HOSTPORT-DNAT": [],
    "CNI-HOSTPORT-SETMARK": [
        f'-m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark {MARK}'
    ],
    "CNI-HOSTPORT-MASQ": [f"-m mark --mark {MARK} -j MASQUERADE"],
}
ENTRY = {
    "PREROUTING": "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
    "OUTPUT": "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
    "POSTROUTING": '-m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ',
}


def _cni_network(node_exec: Any) -> str:
    """The ``name`` of the CNI config containerd uses (the first file of /etc/cni/net.d)."""
    names = sorted(node_exec.run(["ls", "/etc/cni/net.d"], timeout=10).text.split())
    confs = [n for n in names if n.endswith((".conflist", ".conf"))]
    assert confs, f"no CNI config in /etc/cni/net.d: {names}"
    text = node_exec.run(["cat", f"/etc/cni/net.d/{confs[0]}"], timeout=10).text
    conf = json.loads(text)
    assert any(p.get("type") == "portmap" for p in conf.get("plugins", [])), conf
    return str(conf["name"])


def _portmap_rules(
    network: str, sandbox: str, pod_ip: str, pod_cidr: str
) -> tuple[str, set[tuple[str, str, str]]]:
    """The per-pod chain's name and every rule (table, chain, spec) portmap writes for this Pod."""
    chain = "CNI-DN-" + hashlib.sha512((network + sandbox).encode()).hexdigest()[:21]
    port = f"-p tcp -m tcp --dport {HOST_PORT}"
    comment = f'dnat name: \\"{network}\\" id: \\"{sandbox}\\"'
    return chain, {
        (
            "nat",
            "CNI-HOSTPORT-DNAT",
            f'-p tcp -m comment --comment "{comment}" -m multiport --dports {HOST_PORT} -j {chain}',
        ),
        ("nat", chain, f"-s {pod_cidr} {port} -j CNI-HOSTPORT-SETMARK"),
        ("nat", chain, f"-s 127.0.0.1/32 {port} -j CNI-HOSTPORT-SETMARK"),
        ("nat", chain, f"{port} -j DNAT --to-destination {pod_ip}:{CONTAINER_PORT}"),
    }


def _shared_rules() -> set[tuple[str, str, str]]:
    rules = {("nat", c, s) for c, s in ENTRY.items()}
    rules |= {("nat", c, s) for c, specs in TOP.items() for s in specs}
    return rules


def _is_portmap(line: str, chain: str) -> bool:
    return "CNI-HOSTPORT-" in line or chain in line


def _kube_proxy_changes(nd: Any) -> list[str]:
    """Netfilter changes of kube-proxy's: KUBE-* chains and jumps (iptables), its nft tables."""
    lines = [x for x in netfilter_changes(nd) if "KUBE-" in x]
    lines += [
        f"nft {t} {c} {r}" for t, c, r in nd.nft_rules_added + nd.nft_rules_removed if "kube-proxy" in t
    ]
    lines += [f"nft {t} {c}" for t, c in nd.nft_chains_added + nd.nft_chains_removed if "kube-proxy" in t]
    return lines


def _hostport(k8s_cluster: Any, cluster_state: Any, k8s_api: Any) -> None:
    tag = agnhost_on_nodes(k8s_cluster)
    k8s_api.apply(netexec(load_manifest("32-hostport.yaml"), tag))
    k8s_api.wait_ready(f"pod/{POD}", timeout=180)
    pod = k8s_api.get(f"pod/{POD}")
    node, pod_ip = pod["spec"]["nodeName"], pod["status"]["podIP"]
    nodes = {n["metadata"]["name"]: n for n in k8s_api.list("node")}
    others = sorted(n for n in nodes if n != node)
    assert others, "finding 32 needs a second node"
    other = others[0]
    node_exec = k8s_cluster.node(node).exec
    uid = pod["metadata"]["uid"]
    sandboxes = crictl_json(node_exec, "pods", "--name", POD)["items"]
    [sandbox] = [p["id"] for p in sandboxes if p["metadata"]["uid"] == uid and p["state"] == "SANDBOX_READY"]
    network = _cni_network(node_exec)
    chain, per_pod = _portmap_rules(network, sandbox, pod_ip, nodes[node]["spec"]["podCIDR"])
    before = cluster_state.before
    diff = cluster_state.diff()
    after = cluster_state.after

    # the diff on the Pod's node: portmap's per-pod chain, plus its shared chains when this is the node's
    # first hostPort (CNI DEL leaves them: a reused cluster has them before)
    nd = diff.nodes[node]
    had_shared = "CNI-HOSTPORT-DNAT" in before.nodes[node].iptables.tables["nat"].chains
    expected_rules = per_pod | (set() if had_shared else _shared_rules())
    expected_chains = {("nat", chain)} | (set() if had_shared else {("nat", c) for c in TOP})
    portmap_added = {r for r in nd.rules_added if _is_portmap(f"{r[1]} {r[2]}", chain)}
    assert portmap_added == expected_rules, (sorted(portmap_added ^ expected_rules), network, sandbox)
    assert {c for c in nd.chains_added if _is_portmap(c[1], chain)} == expected_chains, nd.chains_added
    assert nd.rules_removed == [], nd.rules_removed
    assert nd.chains_removed == [], nd.chains_removed
    # the shared chains as the node has them now; MASQ jumped to first in POSTROUTING (prepended)
    for name, specs in TOP.items():
        if specs:
            assert chain_specs(after, node, "nat", name) == specs, name
    assert chain_specs(after, node, "nat", "POSTROUTING")[0] == ENTRY["POSTROUTING"]
    for hook in ("PREROUTING", "OUTPUT"):
        assert chain_specs(after, node, "nat", hook).count(ENTRY[hook]) == 1, hook
    # kube-proxy adds nothing for a hostPort (no Service), in either mode; the other node changes nothing
    assert _kube_proxy_changes(nd) == []
    assert_no_netfilter_change(diff, node=other)
    other_nat = after.nodes[other].iptables.tables["nat"].chains
    assert [name for name in other_nat if name.startswith("CNI-DN-")] == [], sorted(other_nat)
    # other changes on the Pod's node: none (ptp, flannel), or bridge's ipMasq chain for the pod's address
    rest = [x for x in netfilter_changes(nd) if not _is_portmap(x, chain) and not x.startswith("nft ")]
    if k8s_cluster.has("cni-bridge"):
        assert rest, "bridge's ipMasq adds a chain for the pod's address"
        assert all(pod_ip in x or "CNI-" in x for x in rest), rest
    else:
        assert rest == [], rest
    # portmap writes iptables (iptables-nft's "ip nat" table) whatever kube-proxy's mode — the exact iptables
    # diff above holds in both modes; the nft view (where captured) changes nowhere outside that table
    nft_tables = {t for t, _, _ in nd.nft_rules_added}
    assert nft_tables <= {"ip nat"}, nft_tables

    # traced: <nodeIP>:hostPort → pod, not masqueraded from outside; masqueraded from localhost (OUTPUT) and
    # from the pod's own subnet (hairpin); another node's IP:hostPort is not DNATed on either node
    node_ip, other_ip = k8s_cluster.node(node).ip, k8s_cluster.node(other).ip
    to_pod = f"{pod_ip}:{CONTAINER_PORT}"
    for src, masq in ((OUTSIDE_SRC, False), (other_ip, False), ("127.0.0.1", True), (pod_ip, True)):
        result = trace_on(after, k8s_cluster, node, node_ip, HOST_PORT, src=src, mode="iptables")
        got = [(o.probability, o.dnat, o.masquerade, o.verdict) for o in result.outcomes]
        assert got == [(Fraction(1), to_pod, masq, "ACCEPT")], (src, got, result.path_examples)
    for on, dst in ((node, other_ip), (other, other_ip), (other, node_ip)):
        result = trace_on(after, k8s_cluster, on, dst, HOST_PORT, src=OUTSIDE_SRC, mode="iptables")
        assert all(o.dnat is None for o in result.outcomes), (on, dst, result.outcomes)

    # observed: from another node and from outside the nodes, the pod answers with the client's address
    to = f"{node_ip}:{HOST_PORT}"
    seen, _ = observe(k8s_cluster, after, to, source=f"node/{other}", node=node, count=20, mode="iptables")
    assert seen.counts() == {POD: 20}, seen.counts()
    assert seen.clients_by_backend()[POD] == {other_ip}, seen.clients_by_backend()
    outside = probe_from_outside(k8s_cluster, node_ip, HOST_PORT, 20)
    assert outside.counts() == {POD: 20}, outside.counts()
    assert outside.clients_by_backend()[POD] == {outside.source_ip}, outside.clients_by_backend()
    refused = probe(
        k8s_cluster, f"{other_ip}:{HOST_PORT}", source=f"node/{node}", count=10, kubectl=kubectl()
    )
    assert refused.outcomes() == {"refused": 10}, refused.connections[:3]
    print(f"\n[f32] {network}: {to} -> {to_pod} via {chain}; {other_ip}:{HOST_PORT} refused")

    # CNI DEL: deleting the Pod removes exactly its chain and the jump to it; the shared chains stay
    programmed = cluster_state.snapshot("hostport")
    k8s_api.delete(f"pod/{POD}", timeout=120)
    gone = cluster_state.eventually(lambda s: _assert_no_chain(s, node, chain), timeout=60)
    removed = cluster_state.diff_between(programmed, gone).nodes[node]
    # CNI DEL undoes exactly what CNI ADD did for this Pod: portmap's per-pod chain and its jump (and the
    # bridge's ipMasq chain), not the shared chains
    added_per_pod = set(nd.rules_added) - _shared_rules()
    assert {r for r in added_per_pod if _is_portmap(f"{r[1]} {r[2]}", chain)} == per_pod
    assert set(removed.rules_removed) == added_per_pod, sorted(set(removed.rules_removed) ^ added_per_pod)
    per_pod_chains = {c for c in nd.chains_added if not c[1].startswith("CNI-HOSTPORT-")}
    assert ("nat", chain) in per_pod_chains
    assert set(removed.chains_removed) == per_pod_chains, (removed.chains_removed, per_pod_chains)
    assert removed.rules_added == [], removed.rules_added
    for name, specs in TOP.items():
        assert chain_specs(gone, node, "nat", name) == specs, name


def _assert_no_chain(snapshot: Any, node: str, chain: str) -> None:
    chains = snapshot.nodes[node].iptables.tables["nat"].chains
    assert chain not in chains, f"{chain} still on {node} (CNI DEL not run yet)"


@pytest.mark.k8sstate_finding(32, "hostPort (ptp): portmap's CNI-DN chain DNATs nodeIP:hostPort to the pod")
@pytest.mark.k8sstate(cni="ptp", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-ptp")
def test_finding_32_hostport_ptp(k8s_cluster, cluster_state, k8s_api):
    _hostport(k8s_cluster, cluster_state, k8s_api)


@pytest.mark.k8sstate_finding(
    32, "hostPort (bridge): portmap's CNI-DN chain DNATs nodeIP:hostPort to the pod"
)
@pytest.mark.k8sstate(cni="bridge", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-bridge")
def test_finding_32_hostport_bridge(k8s_cluster, cluster_state, k8s_api):
    _hostport(k8s_cluster, cluster_state, k8s_api)


@pytest.mark.k8sstate_finding(
    32, "hostPort (flannel): portmap's CNI-DN chain DNATs nodeIP:hostPort to the pod"
)
@pytest.mark.k8sstate(cni="flannel", nodes=1)
@pytest.mark.k8sstate_needs("container-runtime", "cni-flannel")
def test_finding_32_hostport_flannel(k8s_cluster, cluster_state, k8s_api):
    _hostport(k8s_cluster, cluster_state, k8s_api)
