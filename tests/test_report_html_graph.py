"""The Service path graph (:mod:`pytest_k8sstate.report.graph`) on generated kube-proxy-shaped rules:
iptables (parsed from :mod:`~pytest_k8sstate.testing.iptables_gen`'s dumps), nftables (the generator's
ruleset and a real kube-proxy 1.37 ruleset, loaded with ``nft -f`` in our own network namespace and read
back with ``nft -j``), and the page's bounds and escaping."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from report_fixtures import HOSTILE, NODE, NODE_ADDR, iptables_node, snapshots

from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.report import render_report, service_graph
from pytest_k8sstate.report.graph import MAX_OUTCOMES, ServiceGraph, fraction_text
from pytest_k8sstate.report.svg import graph_svg
from pytest_k8sstate.report.tree import MAX_KEYS, etcd_tree_html
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.state.etcddiff import KeyChange
from pytest_k8sstate.state.kubeproxy import ServiceChange
from pytest_k8sstate.testing.iptables_gen import KubeService, kube_proxy_iptables
from pytest_k8sstate.testing.nft_gen import GenService, render_ruleset

NFT_137 = Path(__file__).parent / "data" / "kube-proxy-1.37-nftables.nft"


def _edges(g: ServiceGraph) -> dict[tuple[str, str], tuple[str, str]]:
    """(from label, to label) → (rule probability, share)."""
    label = {n.id: n.label for n in g.nodes}
    return {
        (label[e.src], label[e.dst]): (
            "1" if e.rule_probability is None else fraction_text(e.rule_probability),
            fraction_text(e.share),
        )
        for e in g.edges
    }


def _change(service: str, backend: str, vips: list[str]) -> ServiceChange:
    return ServiceChange(service, backend, vips_after=vips)


def test_iptables_three_endpoints_probabilities_and_shares() -> None:
    ns = iptables_node(3)
    pods = {"10.244.1.2": "default/web-0", "10.244.1.3": "default/web-1", "10.244.2.4": "default/web-2"}
    g = service_graph(_change("default/web:http", "iptables", ["10.96.0.20:80/tcp"]), NODE, ns, pods=pods)
    assert g.error is None
    assert g.packet == "new tcp connection 203.0.113.10:40000 → 10.96.0.20:80"
    edges = _edges(g)
    assert edges[("PREROUTING", "KUBE-SERVICES")] == ("1", "1")
    svc = next(n.label for n in g.nodes if n.label.startswith("KUBE-SVC-"))
    assert edges[("KUBE-SERVICES", svc)] == ("1", "1")
    seps = sorted((v for (a, b), v in edges.items() if a == svc and b.startswith("KUBE-SEP-")))
    assert seps == [("1", "1/3"), ("1/2", "1/3"), ("1/3", "1/3")]  # the statistic rules, then the shares
    ends = {n.label: n.detail for n in g.nodes if n.kind == "endpoint"}
    assert ends == {"10.244.1.2:8080": "web-0", "10.244.1.3:8080": "web-1", "10.244.2.4:8080": "web-2"}
    assert [o.pod for o in g.outcomes if o.target == "10.244.2.4:8080"] == ["default/web-2"]
    assert "KUBE-MARK-MASQ" not in {n.label for n in g.nodes}  # a chain returned from is not on the path
    assert sum(o.share for o in g.outcomes) == 1
    # columns: entry, service chain, endpoint chains, endpoints — no two edges cross
    assert [n.depth for n in g.nodes if n.kind == "endpoint"] == [4, 4, 4]


def test_nodeport_only_service_traces_the_node_address() -> None:
    ns = iptables_node(3)
    g = service_graph(_change("default/web:http", "iptables", ["nodePort 30080/tcp"]), NODE, ns)
    assert g.error is None
    assert g.address == f"nodePort 30080/tcp on {NODE_ADDR['local']}"
    assert {n.label for n in g.nodes if n.kind == "endpoint"} == {
        "10.244.1.2:8080",
        "10.244.1.3:8080",
        "10.244.2.4:8080",
    }
    assert any(n.label == "KUBE-NODEPORTS" for n in g.nodes)


def test_service_without_endpoints_ends_in_its_verdict() -> None:
    text = kube_proxy_iptables([KubeService("default", "empty", "10.96.0.40", 80, port_name="http")])
    ns = NodeState(NODE, iptables=parse_iptables_save(text, source="gen"))
    g = service_graph(_change("default/empty:http", "iptables", ["10.96.0.40:80/tcp"]), NODE, ns)
    assert g.error is None
    assert [(o.target, o.verdict) for o in g.outcomes] == [("REJECT", "REJECT")]
    assert [n.kind for n in g.nodes][-1] == "verdict"


def test_errors_are_part_of_the_graph_not_exceptions() -> None:
    missing = service_graph(_change("a/b", "iptables", ["10.0.0.1:80/tcp"]), NODE, NodeState(NODE))
    assert missing.error == f"no iptables rules captured on {NODE}"
    bad = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j LOOP\n:LOOP - [0:0]\n-A LOOP -j LOOP2\n"
    bad += ":LOOP2 - [0:0]\n-A LOOP2 -j LOOP\nCOMMIT\n"
    ns = NodeState(NODE, iptables=parse_iptables_save(bad, source="loop"))
    g = service_graph(_change("a/b", "iptables", ["10.0.0.1:80/tcp"]), NODE, ns)
    assert g.error is not None
    assert g.error.startswith("trace failed:")
    assert "LOOP" in g.error
    assert "no address" in (service_graph(_change("a/b", "iptables", []), NODE, ns).error or "")


def test_a_thousand_endpoints_draw_a_bounded_graph() -> None:
    eps = tuple(f"10.245.{i // 250}.{i % 250 + 1}:8080" for i in range(1000))
    text = kube_proxy_iptables(
        [KubeService("default", "big", "10.96.0.50", 80, endpoints=eps, port_name="p")]
    )
    ns = NodeState(NODE, iptables=parse_iptables_save(text, source="gen"))
    g = service_graph(_change("default/big:p", "iptables", ["10.96.0.50:80/tcp"]), NODE, ns)
    assert len(g.outcomes) == 1000
    assert g.hidden_outcomes == 1000 - MAX_OUTCOMES
    assert sum(1 for n in g.nodes if n.kind == "endpoint") == MAX_OUTCOMES
    assert sum(o.share for o in g.outcomes) == 1
    assert len(graph_svg(g)) < 200_000


def _nft(text: str) -> NftRuleset:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    with netns.temporary("hrep") as ns:
        ns.run(["nft", "-f", "-"], input=text.encode(), timeout=60)
        return parse_nft_json(ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text, source=ns.netns)


def test_nft_numgen_vmap_to_endpoint_chains() -> None:
    eps = [("10.180.0.1", 8080), ("10.180.0.2", 8080), ("10.180.0.3", 8080)]
    svc = GenService("default", "web", "172.30.0.10", 80, port_name="http", endpoints=eps)
    rs = _nft(render_ruleset([svc], nodeport_ips=["192.168.0.2"]))
    g = service_graph(
        _change("default/web:http", "ip kube-proxy", ["172.30.0.10:80/tcp"]), NODE, NodeState(NODE, nft=rs)
    )
    assert g.error is None
    edges = _edges(g)
    assert edges[("nat-prerouting", "services")] == ("1", "1")
    service = next(n.label for n in g.nodes if n.label.startswith("service-"))
    assert edges[("services", service)] == ("1", "1")
    to_eps = sorted(v for (a, b), v in edges.items() if a == service)
    assert to_eps == [("1/3", "1/3")] * 3  # numgen random mod 3: each entry 1/3
    assert {n.label for n in g.nodes if n.kind == "endpoint"} == {f"{ip}:{p}" for ip, p in eps}
    assert all(o.share == Fraction(1, 3) for o in g.outcomes)


def test_nft_kube_proxy_137_dnat_map_in_the_service_chain() -> None:
    """kube-proxy ≥ 1.33: no endpoint chains; the service chain DNATs with ``numgen … map``."""
    rs = _nft(NFT_137.read_text())
    ns = NodeState(NODE, nft=rs)
    found = next(
        (
            (c.name, r.text)
            for t in rs.tables.values()
            for c in t.chains.values()
            if "default/web/" in c.name and c.name.startswith("service-")
            for r in c.rules
            if "numgen" in r.text
        ),
        None,
    )
    assert found is not None, "the captured ruleset has default/web's numgen map"
    vip = next(
        line.split()[0]
        for line in NFT_137.read_text().splitlines()
        if "goto " + found[0] in line and " . tcp . " in line
    )
    port = next(
        line.split(" . ")[2].split()[0]
        for line in NFT_137.read_text().splitlines()
        if "goto " + found[0] in line and " . tcp . " in line
    )
    g = service_graph(_change("default/web", "ip kube-proxy", [f"{vip}:{port}/tcp"]), NODE, ns)
    assert g.error is None
    edges = _edges(g)
    into = [v for (a, b), v in edges.items() if a == found[0]]
    assert len(into) == 3
    assert all(v == ("1/3", "1/3") for v in into)


def test_tree_is_bounded_and_counts_the_rest() -> None:
    added = [
        KeyChange(f"/registry/configmaps/ns/cm-{i:05}", "ConfigMap", "ns", f"cm-{i:05}")
        for i in range(MAX_KEYS + 250)
    ]
    html = etcd_tree_html(added, [], [])
    assert html.count('class="key added"') == MAX_KEYS
    assert "250 more keys not shown" in html


def test_the_page_is_self_contained_and_escaped() -> None:
    before, after = snapshots()
    page = render_report(before, after)
    assert "<script" not in page.lower()
    assert HOSTILE not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page
    assert "default-src 'none'" in page


def test_hostile_names_in_rules_are_escaped_everywhere() -> None:
    """A rule dump is user input too: a kube-proxy comment naming ``<script>`` reaches the Service's
    name, the graph's labels and the text summary — as text."""
    evil = "default/<script>alert(1)</script>:http"
    dump = kube_proxy_iptables(
        [KubeService("default", "web", "10.96.0.20", 80, endpoints=("10.244.1.2:8080",), port_name="http")]
    ).replace("default/web:http", evil)
    before, after = snapshots()
    ns = NodeState(NODE, iptables=parse_iptables_save(dump, source="evil"), addrs=[NODE_ADDR])
    after.nodes[NODE] = ns
    page = render_report(before, after)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'data-service="default/&lt;script&gt;alert(1)&lt;/script&gt;:http"' in page


def test_deep_keys_and_empty_diffs_stay_bounded() -> None:
    deep = "/registry/" + "/".join(f"s{i}" for i in range(5000))
    html = etcd_tree_html([KeyChange(deep)], [], [])
    assert html.count("<details") == 7  # MAX_DEPTH - 1 folders, the rest is the leaf's name
    assert "s7/s8/s9" in html
    before, _ = snapshots()
    same = render_report(before, before)
    assert "no etcd changes" in same
    assert "no Service's kube-proxy rules changed" in same
    bare = render_report(Snapshot("a", 1.0), Snapshot("b", 2.0))
    assert "no etcd changes" in bare
