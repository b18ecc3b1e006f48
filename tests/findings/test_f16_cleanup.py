"""Finding 16: ``kube-proxy --cleanup`` removes kube-proxy's chains."""

from __future__ import annotations

import pytest

import pytest_k8sstate.binaries as binaries
import pytest_k8sstate.node.netns as netns
from pytest_k8sstate.parse.iptables import parse_iptables_save

from .helpers import add_nfacct_counters, manifest, wait_proxy_endpoints

# chains the kubelet (not kube-proxy) creates: pkg/kubelet/kubelet_network_linux.go
KUBELET_CHAINS = frozenset({"KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"})


def _kube_chains(text: str, source: str) -> list[tuple[str, str]]:
    rs = parse_iptables_save(text, source=source)
    return [(t, c) for t, table in rs.tables.items() for c in table.chains if c.startswith("KUBE-")]


def _jumps_to_kube(text: str, source: str) -> list[str]:
    rs = parse_iptables_save(text, source=source)
    return [
        f"{t} {c} {r.spec}"
        for t, table in rs.tables.items()
        for c, chain in table.chains.items()
        for r in chain.rules
        if (r.target or "").startswith("KUBE-")
    ]


@pytest.mark.k8sstate_finding(16, "kube-proxy --cleanup removes its chains")
@pytest.mark.k8sstate(proxy_mode="iptables")
def test_finding_16_kube_proxy_cleanup_removes_chains(k8s_cluster, k8s_api):
    """Seed 002, section 'Calling kube-proxy as a binary': "for example you can call cleanup: ``kube-proxy
    --cleanup`` If true cleanup iptables and ipvs rules and exit."

    Checked with the real kube-proxy binary of the cluster's version on a copy of a node's real rules:
    the node's ``iptables-save`` (with KUBE-SERVICES, KUBE-SVC-…, KUBE-SEP-…, KUBE-EXT-…, KUBE-NODEPORTS,
    KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-PROXY-CANARY, … for a NodePort Service) is loaded into a fresh
    network namespace, ``kube-proxy --cleanup`` runs there and exits 0, and afterwards every KUBE-* chain
    and every jump into one is gone from every table — except ``KUBE-FIREWALL`` (below).

    Real cluster vs article: ``--cleanup`` leaves the filter chain ``KUBE-FIREWALL`` ("block incoming
    localnet connections", jumped to from INPUT and OUTPUT). kube-proxy writes it when it enables
    ``route_localnet`` for NodePorts on localhost (the chain used to be the kubelet's; these nodes run no
    kubelet), but its cleanup list (upstream pkg/proxy/iptables/cleanup.go) does not include it.
    kube-proxy ≥ 1.28 also keeps nfacct counters (``ct_state_invalid_dropped_pkts``,
    ``localhost_nps_accepted_pkts``) that some of its rules match on; they are created in the copy too, or
    those rules would not load. Run on the live node, the node's own kube-proxy puts everything back at its
    next canary check (that is finding 15), so the copy isolates what ``--cleanup`` itself does.

    Provider difference: on ``kind`` the nodes run a real kubelet, which owns chains of its own in the same
    tables — ``KUBE-KUBELET-CANARY`` (mangle, nat, filter) and ``KUBE-IPTABLES-HINT`` (mangle) — and
    (re)creates ``KUBE-FIREWALL``. ``kube-proxy --cleanup`` rightly leaves the kubelet's chains alone, so
    there they must be in the dump and are the only other KUBE-* chains left; every kube-proxy chain
    (KUBE-SERVICES, KUBE-SVC-…, KUBE-SEP-…, KUBE-PROXY-CANARY, …) and every jump into one must still go.
    """
    binary = binaries.find_binary("kube-proxy")
    if binary is None:
        pytest.fail("the kube-proxy binary is not in the binaries cache; run `k8sstate binaries install`")
    k8s_api.apply(manifest("16-cleanup.yaml"))
    k8s_api.wait_endpoints("svc/f16-web", count=1)
    wait_proxy_endpoints(k8s_cluster, "default/f16-web", 1)
    node = k8s_cluster.workers[0]
    dump = node.exec.run(["iptables-save"]).text
    chains = _kube_chains(dump, f"iptables-save on {node.name}")
    assert {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"} <= {c for _, c in chains}
    assert ("filter", "KUBE-FIREWALL") in chains  # kube-proxy's (and, with a kubelet, also the kubelet's)
    kubelet_chains = sorted(c for c in chains if c[1] in KUBELET_CHAINS)
    if k8s_cluster.has("kubelet"):  # kind: the kubelet's canaries are there, and --cleanup must keep them
        assert ("mangle", "KUBE-KUBELET-CANARY") in kubelet_chains, chains
    else:  # local: kwok nodes, no kubelet, so no kubelet chains either
        assert kubelet_chains == [], kubelet_chains
    expected_left = sorted([("filter", "KUBE-FIREWALL"), *kubelet_chains])
    assert any(c.startswith("KUBE-EXT-") for _, c in chains)
    assert any(c.startswith("KUBE-SEP-") for _, c in chains)

    with netns.temporary("f16") as ns:
        add_nfacct_counters(ns, dump)  # kube-proxy's nfacct counters, which some rules refer to
        ns.run(["iptables-restore"], input=dump.encode())
        copied = ns.run(["iptables-save"]).text
        assert sorted(_kube_chains(copied, "copy")) == sorted(chains)

        result = ns.run([str(binary), "--cleanup", "--v=2"], timeout=60, check=False)
        assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]

        left = ns.run(["iptables-save"]).text
        # every KUBE-* chain and jump goes, except KUBE-FIREWALL and the kubelet's (see the docstring)
        assert sorted(_kube_chains(left, "after --cleanup")) == expected_left, left
        assert sorted(_jumps_to_kube(left, "after --cleanup")) == [
            "filter INPUT -j KUBE-FIREWALL",
            "filter OUTPUT -j KUBE-FIREWALL",
        ], left
        nft = ns.run(["nft", "list", "tables"]).text
        assert "kube-proxy" not in nft, nft
