"""Node diffs from real captures of network namespaces the tests create (and one from ipvsadm text)."""

from __future__ import annotations

import json
from pathlib import Path

from state_netns import capture, needs_root, ns_fixture, restore, snap  # noqa: F401 - the ns fixture

from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.ipvs import parse_ipvsadm
from pytest_k8sstate.state import StateDiff, node_diff_lines
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset


@needs_root
def test_iptables_diff_identity_ignores_position_and_counters(ns: NetnsExec) -> None:
    svcs = make_services(3, [1, 2, 3], node_ports=1)
    restore(ns, kube_proxy_iptables(svcs[:2]))
    before = capture(ns)

    # same rules again, but with counters: no change at all
    dump = ns.run(["iptables-save", "-c"]).text
    bumped = dump.replace("[0:0] -A", "[7:420] -A")
    assert bumped != dump
    restore(ns, bumped, counters=True)
    same = capture(ns)
    assert same.iptables is not None
    assert same.iptables != before.iptables
    d0 = snap("a", {"n1": before}).diff(snap("b", {"n1": same}))
    assert not d0.nodes["n1"], d0.summary()  # ...but the diff is empty
    assert not d0

    # a third service + a rule inserted at the top of KUBE-SERVICES (shifts every position)
    restore(ns, kube_proxy_iptables(svcs))
    ns.run(["iptables", "-t", "nat", "-I", "KUBE-SERVICES", "1", "-s", "192.0.2.1/32", "-j", "RETURN"])
    after = capture(ns)
    d = snap("before", {"n1": before}).diff(snap("after", {"n1": after}))
    nd = d.nodes["n1"]
    new = svcs[2]
    assert ("nat", new.svc_chain) in nd.chains_added
    assert {("nat", c) for c in new.sep_chains()} <= set(nd.chains_added)
    assert nd.chains_removed == []
    assert ("nat", "KUBE-SERVICES", "-s 192.0.2.1/32 -j RETURN") in nd.rules_added
    assert nd.rules_removed == []
    # every added rule belongs to the new service or is the inserted one
    for table, chain, spec in nd.rules_added:
        assert new.port_id in spec or chain in (new.svc_chain, *new.sep_chains()) or "192.0.2.1" in spec, (
            table,
            chain,
            spec,
        )
    # iptables-nft also shows these tables in nft: they are diffed once (as iptables)
    assert nd.nft_rules_added == []
    assert nd.nft_chains_added == []
    assert nd.netfilter_changed
    assert d.netfilter_changed
    text = d.summary(raw_rules=True)  # every rule, not the per-Service summary
    assert f"+ chain nat {new.svc_chain}" in text
    assert "+ rule nat -A KUBE-SERVICES -s 192.0.2.1/32 -j RETURN" in text


@needs_root
def test_nft_base_chain_policy_change_is_diffed(ns: NetnsExec) -> None:
    """A base chain's policy flipping to drop is a netfilter change (it was not compared at all)."""
    table = b"table inet k8ss_t { chain fw_chain { type filter hook forward priority 0; policy accept; }; }"
    ns.run(["nft", "-f", "-"], input=table)
    before = capture(ns)
    ns.run(["nft", "chain", "inet", "k8ss_t", "fw_chain", "{", "policy", "drop", ";", "}"])
    after = capture(ns)
    nd = snap("a", {"n": before}).diff(snap("b", {"n": after})).nodes["n"]
    assert nd.nft_policies_changed == [("inet k8ss_t", "fw_chain", "accept", "drop")]
    assert nd.netfilter_changed
    assert "~ nft policy inet k8ss_t fw_chain: accept → drop" in "\n".join(node_diff_lines(nd))


@needs_root
def test_iptables_duplicate_rules_are_a_multiset(ns: NetnsExec) -> None:
    restore(ns, "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.1.0.0/16 -j ACCEPT\nCOMMIT\n")
    before = capture(ns)
    ns.run(["iptables", "-A", "INPUT", "-s", "10.1.0.0/16", "-j", "ACCEPT"])
    ns.run(["iptables", "-P", "FORWARD", "DROP"])
    after = capture(ns)
    nd = snap("a", {"n": before}).diff(snap("b", {"n": after})).nodes["n"]
    assert nd.rules_added == [("filter", "INPUT", "-s 10.1.0.0/16 -j ACCEPT")]
    assert nd.policies_changed == [("filter", "FORWARD", "ACCEPT", "DROP")]
    back = snap("b", {"n": after}).diff(snap("a", {"n": before})).nodes["n"]
    assert back.rules_removed == [("filter", "INPUT", "-s 10.1.0.0/16 -j ACCEPT")]
    assert back.rules_added == []


@needs_root
def test_nft_ipset_link_addr_route_diff(ns: NetnsExec) -> None:
    svcs = generate_services(3, 2, no_endpoints_every=3)
    ns.run(["nft", "-f", "-"], input=render_ruleset(svcs[:1]).encode(), timeout=30)
    ns.run(["ipset", "create", "KUBE-CLUSTER-IP", "hash:ip,port"])
    before = capture(ns)

    ns.run(["nft", "flush", "ruleset"])
    ns.run(["nft", "-f", "-"], input=render_ruleset(svcs).encode(), timeout=30)
    ns.run(["ipset", "add", "KUBE-CLUSTER-IP", "172.30.0.11,tcp:80"])
    ns.run(["ipset", "create", "KUBE-LOOP-BACK", "hash:ip,port,ip"])
    # (no dummy module in this kernel: a bridge and a veth pair stand in for kube-ipvs0 / eth0)
    ns.run(["ip", "link", "add", "kube-ipvs0", "type", "bridge"])
    ns.run(["ip", "addr", "add", "172.30.0.11/32", "dev", "kube-ipvs0"])
    ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"])
    ns.run(["ip", "link", "set", "eth0-peer", "up"])
    ns.run(["ip", "link", "set", "eth0", "up"])
    ns.run(["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"])
    ns.run(["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"])
    after = capture(ns)

    d = snap("before", {"n": before}).diff(snap("after", {"n": after}))
    nd = d.nodes["n"]
    svc1 = svcs[1]
    assert ("ip kube-proxy", svc1.service_chain) in nd.nft_chains_added
    assert any(c == svc1.service_chain and "numgen random mod 2" in r for _, c, r in nd.nft_rules_added)
    assert any(
        s == "service-ips" and e.startswith("172.30.0.11 . tcp . 80") for _, s, e in nd.nft_elements_added
    )
    # svcs[2] has no endpoints: a no-endpoint-services element with its comment
    assert any(s == "no-endpoint-services" and "ns2/svc2:p80" in e for _, s, e in nd.nft_elements_added)
    assert nd.nft_chains_removed == []
    assert nd.nft_rules_removed == []
    assert nd.ipsets_added == ["KUBE-LOOP-BACK"]
    assert nd.ipset_members_added == [("KUBE-CLUSTER-IP", "172.30.0.11,tcp:80")]
    assert any(x.startswith("kube-ipvs0 (bridge)") for x in nd.links_added)
    assert "172.30.0.11/32 dev kube-ipvs0" in nd.addrs_added
    assert "192.0.2.10/24 dev eth0" in nd.addrs_added
    assert "198.51.100.0/24 via 192.0.2.1 dev eth0" in nd.routes_added
    assert "192.0.2.0/24 dev eth0" in nd.routes_added
    assert any(r.startswith("local 192.0.2.10 dev eth0 table local") for r in nd.routes_added)
    assert nd.links_removed == []
    assert nd.addrs_removed == []
    text = d.summary(limit=None, raw_rules=True)
    assert "+ ipset KUBE-CLUSTER-IP member 172.30.0.11,tcp:80" in text
    assert f"+ nft chain ip kube-proxy {svc1.service_chain}" in text

    # JSON round trip of the diff (tuples survive)
    again = StateDiff.from_json(json.loads(json.dumps(d.to_json())))
    assert again == d


@needs_root
def test_part_not_captured_is_not_reported_as_removed(ns: NetnsExec) -> None:
    restore(ns, kube_proxy_iptables(make_services(1, 1)))
    before = capture(ns)
    after = collect_node(ns, ipvs=False)
    after.iptables = None
    after.errors["iptables"] = "iptables-save not found on node n; install iptables"
    d = snap("a", {"n": before}).diff(snap("b", {"n": after}))
    nd = d.nodes["n"]
    assert nd.rules_removed == []
    assert nd.chains_removed == []
    assert nd.notes == [
        "iptables not compared: not captured after: iptables-save not found on node n; install iptables"
    ]
    assert "note: iptables not compared" in d.summary()


@needs_root
def test_node_added_and_removed(ns: NetnsExec) -> None:
    restore(ns, kube_proxy_iptables(make_services(1, 1)))
    st = capture(ns)
    d = snap("a", {"old": st}).diff(snap("b", {"new": st}))
    assert d.nodes_added == ["new"]
    assert d.nodes_removed == ["old"]
    assert d.nodes["new"].chains_added
    assert d.nodes["old"].chains_removed


def test_ipvs_diff_from_captured_ipvsadm_text() -> None:
    """FAKE BOUNDARY: this kernel has no IPVS, so the node states hold ``ipvsadm -Sn`` text captured on a
    kind node (tests/data) instead of a live capture."""
    text = (Path(__file__).parent / "data" / "ipvsadm-Sn.txt").read_text()
    before = NodeState("n", ipvs=parse_ipvsadm(text))
    lines = [ln for ln in text.splitlines() if not ln.startswith("-a -t 10.96.0.10:53 -r 10.244.0.4:53")]
    after = NodeState("n", ipvs=parse_ipvsadm("\n".join(lines) + "\n"))
    nd = snap("a", {"n": before}).diff(snap("b", {"n": after})).nodes["n"]
    assert nd.ipvs_removed == ["TCP 10.96.0.10:53 -> 10.244.0.4:53"]
    assert nd.ipvs_added == []
    assert nd.netfilter_changed
