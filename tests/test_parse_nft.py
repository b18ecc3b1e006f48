"""nftables JSON parser: real ``nft -j list ruleset`` output captured from a network namespace we create."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.testing.nft_gen import GenService, chain_hash, generate_services, render_ruleset

needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None,
    reason="needs root (network namespaces) and the nft binary (apt-get install nftables)",
)


def _capture(text: str, extra: list[list[str]] | None = None) -> str:
    with netns.temporary("nft") as ns:
        ns.run(["nft", "-f", "-"], input=text.encode(), timeout=60)
        for argv in extra or []:
            ns.run(argv, timeout=30)
        return ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text


@pytest.fixture(scope="module")
def small_dump() -> str:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    svcs = generate_services(3, 3, no_endpoints_every=3)
    svcs[0].external_ips = ["192.168.99.22"]
    return _capture(render_ruleset(svcs, nodeport_ips=["192.168.0.2"]))


def test_chain_hash_matches_kube_proxy() -> None:
    # pkg/proxy/nftables proxier_test.go: "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert chain_hash("ns1/svc1/tcp/p80") == "ULMVA6XW"
    s = GenService("ns1", "svc1", "172.30.0.41", 80, endpoints=[("10.180.0.1", 80)])
    assert s.service_chain == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert s.endpoint_chain("10.180.0.1", 80) == "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"


@needs_nft
def test_tables_chains_and_base_chain_hooks(small_dump: str) -> None:
    rs = parse_nft_json(small_dump)
    t = rs.table("ip", "kube-proxy")
    assert t is not None
    pre = t.chains["nat-prerouting"]
    assert (pre.type, pre.hook, pre.prio, pre.policy) == ("nat", "prerouting", -100, "accept")
    post = t.chains["nat-postrouting"]
    assert (post.type, post.hook, post.prio) == ("nat", "postrouting", 100)
    assert t.chains["filter-forward"].hook == "forward"
    assert t.chains["services"].hook is None
    assert t.chains["services"].type is None
    svc0 = generate_services(3, 3)[0]
    assert svc0.service_chain in t.chains
    assert svc0.endpoint_chain("10.180.0.1", 8080) in t.chains


@needs_nft
def test_rule_text_is_canonical_and_has_no_handles(small_dump: str) -> None:
    rs = parse_nft_json(small_dump)
    t = rs.tables[("ip", "kube-proxy")]
    texts = [r.text for r in t.chains["services"].rules]
    assert texts == [
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    ]
    assert [r.text for r in t.chains["masquerading"].rules] == [
        "meta mark & 0x4000 == 0x0 return",
        "meta mark set meta mark ^ 0x4000",
        "masquerade fully-random",
    ]
    cic = [r.text for r in t.chains["cluster-ips-check"].rules]
    assert cic[0] == 'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"'
    svc = generate_services(3, 3)[0]
    ng = t.chains[svc.service_chain].rules[-1]
    assert ng.text.startswith("numgen random mod 3 vmap { 0 : goto endpoint-")
    assert ng.expr[0]["vmap"]["key"] == {"numgen": {"mode": "random", "mod": 3, "offset": 0}}  # kept as given
    ep = t.chains[svc.endpoint_chain("10.180.0.1", 8080)].rules
    assert ep[-1].text == "meta l4proto tcp dnat to 10.180.0.1:8080"
    assert all(r.handle is not None and str(r.handle) not in r.text.split() for r in ep)


@needs_nft
def test_sets_and_verdict_maps_with_concatenations(small_dump: str) -> None:
    t = parse_nft_json(small_dump).tables[("ip", "kube-proxy")]
    assert set(t.sets) == {"cluster-ips", "nodeport-ips"}
    assert {"service-ips", "service-nodeports", "no-endpoint-services", "firewall-ips"} <= set(t.maps)
    sips = t.maps["service-ips"]
    assert sips.type == ["ipv4_addr", "inet_proto", "inet_service"]
    assert sips.map == "verdict"
    svc = generate_services(3, 3)[0]
    idx = sips.exact_index()
    assert idx[("172.30.0.10", "tcp", "80")].value == f"goto {svc.service_chain}"
    assert idx[("192.168.99.22", "tcp", "80")].value == f"goto {svc.external_chain}"
    assert t.maps["service-nodeports"].exact_index()[("tcp", "30000")].value == f"goto {svc.external_chain}"
    noep = t.maps["no-endpoint-services"].elements
    assert [(e.key, e.value, e.comment) for e in noep] == [
        (("172.30.0.12", "tcp", "80"), "goto reject-chain", "ns2/svc2:p80")
    ]
    assert [e.key for e in t.sets["cluster-ips"].elements] == [
        ("172.30.0.10",),
        ("172.30.0.11",),
        ("172.30.0.12",),
    ]


@needs_nft
def test_identity_is_stable_across_namespaces(small_dump: str) -> None:
    """The same rules loaded in another namespace get other handles but the same identity."""
    svcs = generate_services(3, 3, no_endpoints_every=3)
    svcs[0].external_ips = ["192.168.99.22"]
    # a scratch chain in the same table first (handles are per table), removed afterwards
    pre = (
        "add table ip kube-proxy\nadd chain ip kube-proxy tmp\n" + "add rule ip kube-proxy tmp counter\n" * 3
    )
    again = _capture(
        pre + render_ruleset(svcs, nodeport_ips=["192.168.0.2"]),
        [
            ["nft", "flush", "chain", "ip", "kube-proxy", "tmp"],
            ["nft", "delete", "chain", "ip", "kube-proxy", "tmp"],
        ],
    )
    a, b = parse_nft_json(small_dump), parse_nft_json(again)
    ta, tb = a.tables[("ip", "kube-proxy")], b.tables[("ip", "kube-proxy")]
    assert [r.handle for c in ta.chains.values() for r in c.rules] != [
        r.handle for c in tb.chains.values() for r in c.rules
    ]
    ka = [x for x in a.rule_texts() if x[1] == "kube-proxy"]
    kb = [x for x in b.rule_texts() if x[1] == "kube-proxy"]
    assert ka == kb


@needs_nft
def test_round_trip(small_dump: str) -> None:
    rs = parse_nft_json(small_dump, source="node-1")
    d = rs.to_json()
    back = NftRuleset.from_json(json.loads(json.dumps(d)))
    assert back == rs
    assert back.source == "node-1"


@needs_nft
def test_iptables_nft_xt_expressions_are_kept_verbatim() -> None:
    if shutil.which("iptables-nft") is None:
        pytest.skip("iptables-nft not installed (apt-get install iptables)")
    dump = _capture(
        "add table ip keep\n",
        [
            [
                "iptables-nft",
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-m",
                "comment",
                "--comment",
                "x y",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.5",
                "-j",
                "MASQUERADE",
            ]
        ],
    )
    rs = parse_nft_json(dump)
    rule = rs.tables[("ip", "nat")].chains["POSTROUTING"].rules[0]
    assert {"xt": {"type": "match", "name": "statistic"}} in rule.expr
    assert 'xt match "statistic"' in rule.text
    assert 'xt target "MASQUERADE"' in rule.text


def test_error_names_the_json_path() -> None:
    doc: dict[str, Any] = {
        "nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "ip", "name": "t", "handle": 1}},
            {"chain": {"family": "ip", "table": "t", "name": "c", "handle": 2}},
            {
                "rule": {
                    "family": "ip",
                    "table": "t",
                    "chain": "c",
                    "handle": 3,
                    "expr": [{"accept": None}, 5],
                }
            },
        ]
    }
    with pytest.raises(ParseError, match=r"nftables\[3\]\.rule\.expr\[1\]"):
        parse_nft_json(doc)
    doc["nftables"][3]["rule"]["chain"] = "nope"
    with pytest.raises(ParseError, match=r"nftables\[3\]\.rule\.chain"):
        parse_nft_json(doc)
    with pytest.raises(ParseError, match="valid JSON") as ei:
        parse_nft_json('{"nftables": [\n{"table": }]}', source="dump.json")
    assert ei.value.source == "dump.json"
    assert ei.value.line == 2
    with pytest.raises(ParseError, match="nftables"):
        parse_nft_json("[]")


def test_unknown_top_level_objects_are_kept() -> None:
    doc = {
        "nftables": [
            {"table": {"family": "inet", "name": "t"}},
            {"flowtable": {"family": "inet", "table": "t", "name": "f", "hook": "ingress", "prio": 0}},
        ]
    }
    rs = parse_nft_json(doc)
    assert rs.other == [doc["nftables"][1]]
    assert NftRuleset.from_json(rs.to_json()) == rs


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=30,
)
_KEYS = st.sampled_from(["table", "chain", "rule", "set", "map", "element", "metainfo", "flowtable"])
_FIELDS = st.sampled_from(["family", "name", "table", "chain", "expr", "elem", "type", "map", "prio", "hook"])
_obj = st.dictionaries(
    _KEYS, st.dictionaries(_FIELDS, _json | st.sampled_from(["ip", "t", "c"]), max_size=6), max_size=2
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_obj, max_size=8) | _json)
def test_fuzz_structures_raise_only_parse_error(items: Any) -> None:
    doc = {"nftables": items} if isinstance(items, list) else items
    try:
        rs = parse_nft_json(doc)
    except ParseError:
        return
    assert NftRuleset.from_json(json.loads(json.dumps(rs.to_json()))) == rs


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_fuzz_text_raises_only_parse_error(text: str | bytes) -> None:
    try:
        parse_nft_json(text)
    except ParseError:
        pass


_RULE_BASE: dict[str, Any] = {
    "nftables": [
        {"table": {"family": "ip", "name": "t"}},
        {"chain": {"family": "ip", "table": "t", "name": "c"}},
        {"set": {"family": "ip", "table": "t", "name": "s", "type": "ipv4_addr"}},
        {
            "map": {
                "family": "ip",
                "table": "t",
                "name": "m",
                "type": ["inet_proto", "inet_service"],
                "map": "verdict",
            }
        },
    ]
}


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=5), _json, _json)
def test_fuzz_rule_expressions_and_elements(expr: list[Any], set_elems: Any, map_elems: Any) -> None:
    doc = json.loads(json.dumps(_RULE_BASE))
    doc["nftables"][2]["set"]["elem"] = set_elems
    doc["nftables"][3]["map"]["elem"] = map_elems
    doc["nftables"].append({"rule": {"family": "ip", "table": "t", "chain": "c", "expr": expr}})
    try:
        rs = parse_nft_json(doc)
    except ParseError:
        return
    assert isinstance(rs.tables[("ip", "t")].chains["c"].rules[0].text, str)
