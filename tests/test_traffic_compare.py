"""assert_traffic_matches_trace: observed probe results vs the trace of captured rules (synthetic counts).

The ruleset is a kube-proxy-shaped iptables dump (a ClusterIP with 3 endpoints at kube-proxy's
probabilities 0.33333333349 / 0.5 / 1, and a Service without endpoints REJECTed in the filter table); the
probe results are built by hand, so each verdict of the comparison is pinned down.
"""

from __future__ import annotations

import pytest

from pytest_k8sstate.errors import ConfigError
from pytest_k8sstate.node.capture import NodeState
from pytest_k8sstate.parse.iptables import parse_iptables_save
from pytest_k8sstate.state.snapshot import Snapshot
from pytest_k8sstate.traffic.compare import assert_traffic_matches_trace, outcome_name, traced_outcomes
from pytest_k8sstate.traffic.probe import Connection, ProbeResult
from pytest_k8sstate.util import evidence

NODE_IP = "172.18.0.2"
BRIDGE_IP = "10.244.0.1"
PODS = {"web-a": "10.244.0.5", "web-b": "10.244.1.6", "web-c": "10.244.2.7"}
RULES = f"""*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SEP-B - [0:0]
:KUBE-SEP-C - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-X -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-A
-A KUBE-SVC-X -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-B
-A KUBE-SVC-X -j KUBE-SEP-C
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination {PODS["web-a"]}:8080
-A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination {PODS["web-b"]}:8080
-A KUBE-SEP-C -p tcp -m tcp -j DNAT --to-destination {PODS["web-c"]}:8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A OUTPUT -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.96.0.60/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
"""


def _snapshot() -> Snapshot:
    addrs = [{"family": "inet", "local": ip} for ip in (NODE_IP, BRIDGE_IP, "127.0.0.1")]
    node = NodeState("n1", iptables=parse_iptables_save(RULES, "test rules"), addrs=addrs)
    return Snapshot(label="after", taken_at=0.0, cluster={"proxy_mode": "iptables"}, nodes={"n1": node})


def _probe(split: dict[str, int], *, target: str = "10.96.0.50:80", seen: str = NODE_IP) -> ProbeResult:
    conns: list[Connection] = []
    for name, count in split.items():
        for _ in range(count):
            i = len(conns) + 1
            if name in PODS:
                conns.append(Connection(i, "ok", name, f"{seen}:{40000 + i}"))
            else:
                conns.append(Connection(i, name, detail="nc: ..."))
    return ProbeResult(
        target, "node/n1", tuple(conns), 1.0, NODE_IP, {k: v for k, v in PODS.items() if k in split}
    )


def test_traced_outcomes_name_backends_like_the_probe():
    _, probs, masq = traced_outcomes(_snapshot(), _probe({"web-a": 1, "web-b": 1, "web-c": 1}), node="n1")
    assert set(probs) == set(PODS)
    assert all(p == pytest.approx(1 / 3, abs=1e-8) for p in probs.values())
    assert masq == dict.fromkeys(PODS, True)  # from the node (not in the cluster CIDR): KUBE-MARK-MASQ
    assert outcome_name(None, "REJECT", "10.96.0.60", {}) == "refused"
    assert outcome_name(None, "DROP", "10.96.0.60", {}) == "timeout"
    assert outcome_name("10.9.9.9:80", "ACCEPT", "10.96.0.60", {}).startswith("10.9.9.9:80 (no backend")


def test_fair_observed_split_passes():
    test = assert_traffic_matches_trace(
        _snapshot(), _probe({"web-a": 97, "web-b": 104, "web-c": 99}), node="n1"
    )
    assert test.passed
    assert test.total == 300
    assert test.p_value > 0.5


def test_skewed_split_fails_with_traced_and_observed_side_by_side():
    evidence.drain()
    with pytest.raises(AssertionError) as err:
        assert_traffic_matches_trace(_snapshot(), _probe({"web-a": 160, "web-b": 70, "web-c": 70}), node="n1")
    text = str(err.value)
    assert "unlikely under the traced one" in text
    assert "traced share" in text
    assert "observed" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("web-a"))
    assert "0.33333" in row
    assert "160" in row
    # the row's own p (160 of 300 where 100 are expected) is tiny; the table says so
    assert float(row.split()[4]) < 1e-6, row
    [recorded] = evidence.drain("traffic")
    assert not recorded.passed
    assert "DOES NOT match the trace" in recorded.text
    assert "web-a" in recorded.text


def test_comparison_table_and_evidence_of_a_passing_probe():
    evidence.drain()
    comparison = assert_traffic_matches_trace(
        _snapshot(), _probe({"web-a": 97, "web-b": 104, "web-c": 99}), node="n1"
    )
    header, *rows, footer = comparison.table()
    assert header.split()[:6] == ["backend", "traced", "share", "observed", "expected", "p"]
    assert {r.split()[0] for r in rows} == set(PODS)
    by_name = {r.split()[0]: r.split() for r in rows}
    assert by_name["web-b"][2] == "104"
    assert by_name["web-b"][3] == "100.0"
    assert 0.6 < float(by_name["web-b"][4]) < 0.8  # (104-100)^2/(100*2/3) = 0.24 -> p = 0.62..0.63
    assert by_name["web-b"][5] == "yes"  # masqueraded from the node
    assert footer.startswith("N=300")
    [recorded] = evidence.drain("traffic")
    assert recorded.passed
    assert recorded.text.splitlines()[0].endswith("matches the trace")


def test_masquerade_mismatch_fails():
    """Traced masqueraded, but a backend saw an address that is not the node's."""
    with pytest.raises(AssertionError, match=r"traced masqueraded .* but it saw 203\.0\.113\.9"):
        assert_traffic_matches_trace(
            _snapshot(), _probe({"web-a": 100, "web-b": 100, "web-c": 100}, seen="203.0.113.9"), node="n1"
        )
    # the bridge address is the node's too (masquerade towards a local pod)
    ok = _probe({"web-a": 100, "web-b": 100, "web-c": 100}, seen=BRIDGE_IP)
    assert assert_traffic_matches_trace(_snapshot(), ok, node="n1").passed


def test_no_endpoints_is_refused_and_a_backend_answering_there_fails():
    refused = _probe({"refused": 30}, target="10.96.0.60:80")
    assert assert_traffic_matches_trace(_snapshot(), refused, node="n1").passed
    answered = _probe({"refused": 29, "web-a": 1}, target="10.96.0.60:80")
    with pytest.raises(AssertionError, match="never produces: web-a"):
        assert_traffic_matches_trace(_snapshot(), answered, node="n1")
    timeouts = _probe({"timeout": 30}, target="10.96.0.60:80")
    with pytest.raises(AssertionError, match="never produces: timeout"):
        assert_traffic_matches_trace(_snapshot(), timeouts, node="n1")


def test_bad_inputs_are_config_errors():
    with pytest.raises(ConfigError, match="has no node 'n9'"):
        assert_traffic_matches_trace(_snapshot(), _probe({"web-a": 300}), node="n9")
    with pytest.raises(ConfigError, match="probe at least 15"):
        assert_traffic_matches_trace(_snapshot(), _probe({"web-a": 3, "web-b": 3, "web-c": 3}), node="n1")
    with pytest.raises(ConfigError, match="no nftables state"):
        assert_traffic_matches_trace(_snapshot(), _probe({"web-a": 300}), node="n1", mode="nftables")


_CHECK = "-m recent --rcheck --seconds 10800 --reap --name"
_SET = "-p tcp -m recent --set --name"
_SRC = "--mask 255.255.255.255 --rsource"
STICKY = f"""*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-S - [0:0]
:KUBE-SEP-SA - [0:0]
:KUBE-SEP-SB - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
-A POSTROUTING -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.70/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-S
-A KUBE-SVC-S ! -s 10.244.0.0/16 -d 10.96.0.70/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-S {_CHECK} KUBE-SEP-SA {_SRC} -j KUBE-SEP-SA
-A KUBE-SVC-S {_CHECK} KUBE-SEP-SB {_SRC} -j KUBE-SEP-SB
-A KUBE-SVC-S -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-SA
-A KUBE-SVC-S -j KUBE-SEP-SB
-A KUBE-SEP-SA {_SET} KUBE-SEP-SA {_SRC} -m tcp -j DNAT --to-destination {PODS["web-a"]}:8080
-A KUBE-SEP-SB {_SET} KUBE-SEP-SB {_SRC} -m tcp -j DNAT --to-destination {PODS["web-b"]}:8080
COMMIT
"""


def _sticky() -> Snapshot:
    snap = _snapshot()
    snap.nodes["n1"].iptables = parse_iptables_save(STICKY, "sticky rules")
    return snap


def test_affinity_follow_ups_are_compared_with_the_returning_trace():
    """ClientIP affinity (``-m recent``): a client's follow-up connections, given its first backend, are
    traced to that backend with probability 1; as NEW connections the same counts are a failed split."""
    first = f"{PODS['web-a']}:8080"
    follow_ups = _probe({"web-a": 29}, target="10.96.0.70:80")
    comparison = assert_traffic_matches_trace(
        _sticky(), follow_ups, node="n1", affinity="returning", first_backend=first
    )
    assert [(r[0], r[1]) for r in comparison.split.rows] == [("web-a", 1.0)]
    assert "returning client after 10.244.0.5:8080" in comparison.title
    with pytest.raises(AssertionError, match="never produces: web-b"):
        assert_traffic_matches_trace(
            _sticky(),
            _probe({"web-a": 28, "web-b": 1}, target="10.96.0.70:80"),
            node="n1",
            affinity="returning",
            first_backend=first,
        )
    with pytest.raises(AssertionError, match="unlikely under the traced one"):  # 29/0 of a 1/2 split
        assert_traffic_matches_trace(_sticky(), follow_ups, node="n1")
    evidence.drain()
