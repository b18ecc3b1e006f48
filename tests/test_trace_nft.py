"""nftables packet tracer on real kube-proxy-format rulesets loaded with ``nft -f`` in our own namespaces."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import TraceError
from pytest_k8sstate.node import netns
from pytest_k8sstate.parse.nft import NftRuleset, parse_nft_json
from pytest_k8sstate.testing.nft_gen import GenService, generate_services, render_ruleset
from pytest_k8sstate.trace import Packet, trace
from pytest_k8sstate.trace.nft import trace_nft

NODE_IP = "192.168.0.2"
LOCAL = frozenset({NODE_IP})
POD_SRC = "10.180.9.9"  # inside cluster CIDR 10.0.0.0/8: not masqueraded
OUTSIDE = "203.0.113.10"


def _load(text: str, extra: list[list[str]] | None = None) -> NftRuleset:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root (network namespaces) and the nft binary (apt-get install nftables)")
    with netns.temporary("trace") as ns:
        ns.run(["nft", "-f", "-"], input=text.encode(), timeout=60)
        for argv in extra or []:
            ns.run(argv, timeout=30)
        return parse_nft_json(
            ns.run(["nft", "-j", "list", "ruleset"], timeout=60).text, source=f"netns {ns.netns}"
        )


def _services() -> list[GenService]:
    # svc0..svc4: 1..5 endpoints, NodePorts 30000..30004; svc5: no endpoints (NodePort 30005)
    out = []
    for i in range(6):
        n = i + 1 if i < 5 else 0
        eps = [(f"10.180.{i}.{j + 1}", 8080) for j in range(n)]
        out.append(
            GenService(f"ns{i}", f"svc{i}", f"172.30.0.{10 + i}", 80, endpoints=eps, node_port=30000 + i)
        )
    out[1].external_ips = ["192.168.99.22"]
    return out


@pytest.fixture(scope="module", params=["set", "fib"])
def ruleset(request: pytest.FixtureRequest) -> NftRuleset:
    """NodePort dispatch in the current (``@nodeport-ips``) and the older (``fib daddr type local``) form."""
    return _load(render_ruleset(_services(), nodeport_ips=[NODE_IP], nodeport_style=request.param))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_cluster_ip_spreads_exactly_evenly(ruleset: NftRuleset, n: int) -> None:
    r = trace_nft(ruleset, Packet(f"172.30.0.{9 + n}", 80, src=POD_SRC, local_ips=LOCAL))
    assert r.endpoints == {f"10.180.{n - 1}.{j + 1}:8080": Fraction(1, n) for j in range(n)}
    assert all(o.verdict == "ACCEPT" and not o.masquerade for o in r.outcomes)
    assert sum(o.probability for o in r.outcomes) == 1


def test_three_endpoints_one_third_each_and_outside_client_masqueraded(ruleset: NftRuleset) -> None:
    r = trace(ruleset, Packet("172.30.0.12", 80, src=OUTSIDE, local_ips=LOCAL))
    assert [(o.probability, o.masquerade, o.verdict) for o in r.outcomes] == [
        (Fraction(1, 3), True, "ACCEPT")
    ] * 3
    assert {o.dnat for o in r.outcomes} == {"10.180.2.1:8080", "10.180.2.2:8080", "10.180.2.3:8080"}
    assert all(any("masquerading" in step for step in p) for p in r.path_examples)


def test_nodeport_via_local_address(ruleset: NftRuleset) -> None:
    r = trace_nft(ruleset, Packet(NODE_IP, 30001, src=OUTSIDE, local_ips=LOCAL))
    assert r.endpoints == {"10.180.1.1:8080": Fraction(1, 2), "10.180.1.2:8080": Fraction(1, 2)}
    assert all(o.masquerade for o in r.outcomes)
    # the same port on an address that is not the node's: no NodePort, plain forwarding
    r2 = trace_nft(ruleset, Packet("192.168.0.3", 30001, src=OUTSIDE, local_ips=LOCAL))
    assert [(o.dnat, o.verdict) for o in r2.outcomes] == [(None, "ACCEPT")]


def test_external_ip(ruleset: NftRuleset) -> None:
    r = trace_nft(ruleset, Packet("192.168.99.22", 80, src=OUTSIDE, local_ips=LOCAL))
    assert set(r.endpoints) == {"10.180.1.1:8080", "10.180.1.2:8080"}
    assert all(o.masquerade for o in r.outcomes)


def test_service_without_endpoints_rejects(ruleset: NftRuleset) -> None:
    r = trace_nft(ruleset, Packet("172.30.0.15", 80, src=POD_SRC, local_ips=LOCAL))
    assert [(o.probability, o.dnat, o.verdict) for o in r.outcomes] == [(Fraction(1), None, "REJECT")]
    assert "kube-proxy/reject-chain" in r.path_examples[0][-1]
    rn = trace_nft(ruleset, Packet(NODE_IP, 30005, src=OUTSIDE, local_ips=LOCAL))
    assert [o.verdict for o in rn.outcomes] == ["REJECT"]


def test_cluster_ip_wrong_port_rejects_and_unallocated_drops(ruleset: NftRuleset) -> None:
    wrong = trace_nft(ruleset, Packet("172.30.0.10", 81, src=POD_SRC, local_ips=LOCAL))
    assert [o.verdict for o in wrong.outcomes] == ["REJECT"]
    unalloc = trace_nft(ruleset, Packet("172.30.0.200", 80, src=POD_SRC, local_ips=LOCAL))
    assert [o.verdict for o in unalloc.outcomes] == ["DROP"]
    udp = trace_nft(ruleset, Packet("172.30.0.10", 80, proto="udp", src=POD_SRC, local_ips=LOCAL))
    assert [o.verdict for o in udp.outcomes] == ["REJECT"]


def test_hairpin_is_masqueraded(ruleset: NftRuleset) -> None:
    r = trace_nft(ruleset, Packet("172.30.0.11", 80, src="10.180.1.1", local_ips=LOCAL))
    by = {o.dnat: o.masquerade for o in r.outcomes}
    assert by == {"10.180.1.1:8080": True, "10.180.1.2:8080": False}


def test_from_the_node_itself_goes_through_output(ruleset: NftRuleset) -> None:
    r = trace_nft(ruleset, Packet("172.30.0.10", 80, src=NODE_IP, local_ips=LOCAL))
    assert [(o.dnat, o.masquerade) for o in r.outcomes] == [("10.180.0.1:8080", True)]
    assert any("nat-output" in s for s in r.path_examples[0])


def test_unsupported_expression_reached_is_an_error_naming_the_rule() -> None:
    text = render_ruleset(_services()[:1], nodeport_ips=[NODE_IP])
    limit = ["nft", "insert", "rule", "ip", "kube-proxy", "services", "limit", "rate", "5/second", "drop"]
    rs = _load(text, [limit])
    with pytest.raises(
        TraceError, match=r"cannot evaluate rule 'limit .*' in ip kube-proxy/chain services \(handle \d+\)"
    ):
        trace_nft(rs, Packet("172.30.0.10", 80, src=POD_SRC, local_ips=LOCAL))


def test_a_limit_that_only_gates_a_log_or_counter_has_no_effect() -> None:
    text = render_ruleset(_services()[:1], nodeport_ips=[NODE_IP])
    log = [
        "nft",
        "insert",
        "rule",
        "ip",
        "kube-proxy",
        "services",
        "limit",
        "rate",
        "5/second",
        "log",
        "counter",
    ]
    bare = ["nft", "insert", "rule", "ip", "kube-proxy", "services", "limit", "rate", "5/second"]
    rs = _load(text, [log, bare])
    r = trace_nft(rs, Packet("172.30.0.10", 80, src=POD_SRC, local_ips=LOCAL))
    assert r.endpoints == {"10.180.0.1:8080": 1}


def test_unsupported_expression_not_reached_is_fine() -> None:
    text = render_ruleset(_services()[:1], nodeport_ips=[NODE_IP])
    svc = _services()[0]
    rs = _load(
        text,
        [
            [
                "nft",
                "add",
                "rule",
                "ip",
                "kube-proxy",
                svc.endpoint_chain("10.180.0.1", 8080),
                "limit",
                "rate",
                "5/second",
            ]
        ],
    )
    r = trace_nft(rs, Packet("172.30.0.10", 80, src=POD_SRC, local_ips=LOCAL))
    assert r.endpoints == {"10.180.0.1:8080": 1}  # dnat is terminal: the limit rule after it never runs


def test_missing_table_is_a_clear_error() -> None:
    rs = _load("add table ip other\n")
    with pytest.raises(TraceError, match="no table ip kube-proxy"):
        trace_nft(rs, Packet("172.30.0.10", 80))


def test_generated_ruleset_scales_to_many_services() -> None:
    svcs = generate_services(300, 3, no_endpoints_every=10)
    rs = _load(render_ruleset(svcs, nodeport_ips=[NODE_IP]))
    last = svcs[-2]
    r = trace_nft(rs, Packet(last.cluster_ip, 80, src=POD_SRC, local_ips=LOCAL))
    assert r.endpoints == {f"{ip}:{port}": Fraction(1, 3) for ip, port in last.endpoints}
    r2 = trace_nft(rs, Packet(svcs[9].cluster_ip, 80, src=POD_SRC, local_ips=LOCAL))
    assert [o.verdict for o in r2.outcomes] == ["REJECT"]


_EXPRS = st.sampled_from(
    [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": "10.0.0.1",
            }
        },
        {
            "match": {
                "op": "!=",
                "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": {"prefix": {"addr": "10.0.0.0", "len": 8}},
            }
        },
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                "right": {"set": [80, {"range": [1000, 2000]}]},
            }
        },
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
        {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["new", "established"]}},
        {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
        {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 0}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@s"}},
        {"match": {"op": "<", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 1024}},
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                "right": {"weird": 1},
            }
        },
        {"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}},
        {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}},
        {"counter": {"packets": 1, "bytes": 2}},
        {
            "vmap": {
                "key": {"numgen": {"mode": "random", "mod": 3, "offset": 0}},
                "data": {"set": [[0, {"jump": {"target": "c2"}}], [2, {"drop": None}]]},
            }
        },
        {
            "vmap": {
                "key": {
                    "concat": [
                        {"meta": {"key": "l4proto"}},
                        {"payload": {"protocol": "th", "field": "dport"}},
                    ]
                },
                "data": "@m",
            }
        },
        {"dnat": {"addr": "10.1.1.1", "port": 8080}},
        {"dnat": {"addr": "10.1.1.2"}},
        {"masquerade": None},
        {"jump": {"target": "c2"}},
        {"goto": {"target": "c2"}},
        {"jump": {"target": "nope"}},
        {"return": None},
        {"accept": None},
        {"drop": None},
        {"reject": {"type": "icmp", "expr": "port-unreachable"}},
        {"limit": {"rate": 5, "per": "second"}},
        {"xt": {"type": "match", "name": "comment"}},
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(_EXPRS, max_size=4), max_size=4),
    st.lists(st.lists(_EXPRS, max_size=3), max_size=3),
    st.sampled_from(["10.0.0.1", "192.168.0.2", "8.8.8.8"]),
    st.sampled_from(["10.0.0.5", "192.168.0.2"]),
)
def test_fuzz_trace_gives_a_distribution_or_trace_error(
    base_rules: list[list[Any]], sub_rules: list[list[Any]], dst: str, src: str
) -> None:
    objs: list[dict[str, Any]] = [
        {"table": {"family": "ip", "name": "kube-proxy"}},
        {"set": {"family": "ip", "table": "kube-proxy", "name": "s", "type": "ipv4_addr",
                 "flags": ["interval"], "elem": ["10.0.0.1", {"prefix": {"addr": "192.168.0.0", "len": 16}}],
                 }},
        {"map": {"family": "ip", "table": "kube-proxy", "name": "m", "type": ["inet_proto", "inet_service"],
                 "map": "verdict", "elem": [[{"concat": ["tcp", 80]}, {"goto": {"target": "c2"}}]]}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-prerouting", "type": "nat",
                   "hook": "prerouting", "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-output", "type": "nat",
                   "hook": "output", "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "post", "type": "nat",
                   "hook": "postrouting", "prio": 100, "policy": "drop"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "c2"}},
    ]  # fmt: skip
    for chain in ("nat-prerouting", "nat-output", "post"):
        for expr in base_rules:
            objs.append({"rule": {"family": "ip", "table": "kube-proxy", "chain": chain, "expr": expr}})
    for expr in sub_rules:
        objs.append({"rule": {"family": "ip", "table": "kube-proxy", "chain": "c2", "expr": expr}})
    rs = parse_nft_json({"nftables": objs})
    try:
        r = trace_nft(rs, Packet(dst, 80, src=src, local_ips=frozenset({"192.168.0.2"})))
    except TraceError as exc:
        msg = str(exc)
    else:
        msg = ""
    if msg:
        assert "cannot evaluate rule" in msg or "nested deeper" in msg
        return
    assert sum(o.probability for o in r.outcomes) == 1
    assert len(r.path_examples) == len(r.outcomes)
