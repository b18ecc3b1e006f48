"""Assertion helpers: messages ("did you mean …"), verbosity, and netfilter checks on real captures."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

import pytest_k8sstate.assertions as A
from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.state import Snapshot, StateDiff
from pytest_k8sstate.testing.iptables_gen import KubeService, kube_proxy_iptables, make_services
from pytest_k8sstate.testing.nft_gen import GenService, generate_services, render_ruleset

# --------------------------------------------------------------------------------------------------
# etcd key assertions (diff logic: EtcdState objects built from real JSON values)


def _entry(key: str, obj: dict[str, object], rev: int) -> EtcdEntry:
    value = json.dumps(obj).encode()
    return EtcdEntry(key, rev, rev, 1, len(value), value=value)


def _obj(kind: str, ns: str | None, name: str, **extra: object) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "uid": f"uid-{name}"}
    if ns:
        meta["namespace"] = ns
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, **extra}


def _state(rev: int, objs: dict[str, dict[str, object]]) -> EtcdState:
    return EtcdState(rev, "/registry", {k: _entry(k, v, rev) for k, v in objs.items()})


SVC = "/registry/services/specs/default/web"
SLICE = "/registry/endpointslices/default/web-x7k2p"
DEPLOY = "/registry/deployments/default/web"
LEASE = "/registry/leases/kube-node-lease/node-1"
EVENT = "/registry/events/default/web.17a"


@pytest.fixture
def diff() -> StateDiff:
    before = _state(
        5,
        {
            DEPLOY: _obj("Deployment", "default", "web", spec={"replicas": 1}),
            LEASE: _obj("Lease", "kube-node-lease", "node-1", spec={"renewTime": "1"}),
        },
    )
    after = _state(
        9,
        {
            DEPLOY: _obj("Deployment", "default", "web", spec={"replicas": 3}),
            LEASE: _obj("Lease", "kube-node-lease", "node-1", spec={"renewTime": "2"}),
            SVC: _obj("Service", "default", "web"),
            SLICE: _obj("EndpointSlice", "default", "web-x7k2p"),
            EVENT: _obj("Event", "default", "web.17a"),
        },
    )
    return Snapshot("before", 1.0, etcd=before).diff(Snapshot("after", 2.0, etcd=after))


def test_assert_new_keys_passes_with_globs_and_relative_patterns(diff: StateDiff) -> None:
    got = A.assert_new_keys(diff, ["/registry/services/specs/default/web", "endpointslices/default/web-*"])
    assert [c.key for c in got] == [SVC, SLICE]
    A.assert_new_keys(diff, "/registry/**/web-*")
    A.assert_new_keys(diff, [SVC, SLICE], exact=True)  # the new Event is ignored by default


def test_assert_new_keys_did_you_mean(diff: StateDiff) -> None:
    with pytest.raises(AssertionError) as ei:
        A.assert_new_keys(diff, "/registry/endpointslices/default/web-x7k2q", verbose=False)
    msg = str(ei.value)
    assert msg.splitlines()[0] == "no new etcd key matches '/registry/endpointslices/default/web-x7k2q'"
    assert "did you mean /registry/endpointslices/default/web-x7k2p?" in msg
    assert "2 new key(s):" in msg
    assert "(run pytest -v for the full diff)" in msg
    assert "diff before → after" not in msg


def test_assert_new_keys_says_modified_not_added(diff: StateDiff) -> None:
    with pytest.raises(
        AssertionError, match=r"it was modified, not added: /registry/deployments/default/web"
    ):
        A.assert_new_keys(diff, "deployments/default/*")


def test_assert_new_keys_exact_lists_unexpected(diff: StateDiff) -> None:
    with pytest.raises(AssertionError) as ei:
        A.assert_new_keys(diff, SVC, exact=True, verbose=True)
    msg = str(ei.value)
    assert "1 unexpected new etcd key(s) (exact=True):" in msg
    assert f"  {SLICE} (EndpointSlice)" in msg
    # verbose: the full diff, ignored keys included
    assert "diff before → after (etcd revision 5 → 9)" in msg
    assert f"+ {EVENT}" in msg


def test_verbosity_global(diff: StateDiff) -> None:
    old = A.get_verbosity()
    try:
        A.set_verbosity(1)
        with pytest.raises(AssertionError, match=r"(?s)diff before → after"):
            A.assert_no_new_keys(diff)
        A.set_verbosity(0)
        with pytest.raises(AssertionError) as ei:
            A.assert_no_new_keys(diff)
        assert "diff before → after" not in str(ei.value)
    finally:
        A.set_verbosity(old)


def test_assert_no_new_keys(diff: StateDiff) -> None:
    with pytest.raises(AssertionError) as ei:
        A.assert_no_new_keys(diff, verbose=False)
    assert str(ei.value).startswith("2 new etcd key(s) (outside the ignore patterns):\n")
    A.assert_no_new_keys(diff, "pods/**")
    with pytest.raises(AssertionError, match=r"1 new etcd key\(s\) matching 'events/\*\*'"):
        A.assert_no_new_keys(diff, "events/**")  # explicit patterns see ignored keys too


def test_assert_modified_and_removed_keys(diff: StateDiff) -> None:
    (c,) = A.assert_modified_keys(diff, "deployments/default/web", fields=["spec.replicas"])
    assert c.changed_fields == ["spec.replicas"]
    A.assert_modified_keys(diff, LEASE)  # explicitly asked: ignored keys match
    with pytest.raises(AssertionError, match=r"not in field\(s\) spec.template \(changed: spec.replicas\)"):
        A.assert_modified_keys(diff, DEPLOY, fields=["spec.template"])
    with pytest.raises(AssertionError) as ei:
        A.assert_removed_keys(diff, "/registry/services/specs/default/web")
    msg = str(ei.value)
    assert "no removed etcd key matches" in msg
    assert "it was added, not removed: /registry/services/specs/default/web" in msg
    assert "(no key was removed at all)" in msg


# --------------------------------------------------------------------------------------------------
# netfilter on real network namespaces


@pytest.fixture
def ns() -> Iterator[NetnsExec]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and loads netfilter rules (CAP_NET_ADMIN)")
    with netns.temporary("h4a") as n:
        yield n


def _capture(ns: NetnsExec) -> NodeState:
    st = collect_node(ns, ipvs=False)
    assert not st.errors, st.errors
    return st


def _iptables_node(ns: NetnsExec, services: list[KubeService]) -> NodeState:
    ns.run(["iptables-restore"], input=kube_proxy_iptables(services).encode(), timeout=60)
    return _capture(ns)


def _nft_node(ns: NetnsExec, services: list[GenService]) -> NodeState:
    ns.run(["nft", "-f", "-"], input=render_ruleset(services).encode(), timeout=60)
    return _capture(ns)


@pytest.mark.parametrize("n_endpoints", [1, 2, 3, 4, 5])
def test_assert_dnat_to_iptables_balanced(ns: NetnsExec, n_endpoints: int) -> None:
    svcs = make_services(2, [n_endpoints, 0], node_ports=1)
    st = _iptables_node(ns, svcs)
    web = svcs[0]
    snap = Snapshot("s", 1.0, nodes={"n1": st})
    res = A.assert_dnat_to(snap, service="default/svc-0:http", endpoints=list(web.endpoints))
    assert set(res) == {"n1"}
    A.assert_dnat_to(st, service="default/svc-0", endpoints=[e.split(":")[0] for e in web.endpoints])
    A.assert_dnat_to(st, dst=f"{web.cluster_ip}:80", endpoints=list(web.endpoints))
    A.assert_dnat_to(st, service="default/svc-1", endpoints=[])  # no endpoints: REJECT, no DNAT


def test_assert_dnat_to_iptables_failures(ns: NetnsExec) -> None:
    svcs = make_services(2, [3, 0])
    st = _iptables_node(ns, svcs)
    web = svcs[0]
    wrong = [*web.endpoints[:2], "10.244.0.99:8080"]
    with pytest.raises(AssertionError) as ei:
        A.assert_dnat_to(st, service="default/svc-0", endpoints=wrong, verbose=True)
    msg = str(ei.value)
    assert (
        msg.splitlines()[0]
        == f"service default/svc-0:http ({web.cluster_ip}:80/tcp) expected DNAT to {', '.join(wrong)}"
    )
    assert f"missing 10.244.0.99:8080; unexpected {web.endpoints[2]}" in msg
    assert f"did you mean {web.endpoints[2]}?" in msg
    assert "via " in msg  # verbose: the rule paths

    with pytest.raises(
        AssertionError, match=r"service 'default/svc-00' not found .*did you mean default/svc-0"
    ):
        A.assert_dnat_to(st, service="default/svc-00", endpoints=[])
    with pytest.raises(AssertionError, match=r"p=1 of connections not DNATed \(REJECT\)"):
        A.assert_dnat_to(st, service="default/svc-1", endpoints=["10.244.0.2:8080"])
    with pytest.raises(AssertionError, match=r"has no udp port"):
        A.assert_dnat_to(st, service="default/svc-0", endpoints=[], proto="udp")


def test_assert_dnat_to_nft_and_masquerade(ns: NetnsExec) -> None:
    svcs = generate_services(3, 3, no_endpoints_every=3)
    st = _nft_node(ns, svcs)
    s0 = svcs[0]
    eps = [f"{ip}:{port}" for ip, port in s0.endpoints]
    A.assert_dnat_to(st, service=f"{s0.namespace}/{s0.name}", endpoints=eps)
    A.assert_dnat_to(st, service=f"{s0.namespace}/{s0.name}:p80", endpoints=eps)
    A.assert_dnat_to(st, dst=f"{s0.cluster_ip}:80", endpoints=eps)
    s2 = svcs[2]
    A.assert_dnat_to(st, service=f"{s2.namespace}/{s2.name}", endpoints=[])  # no endpoints
    with pytest.raises(AssertionError, match=r"did you mean ns0/svc0"):
        A.assert_dnat_to(st, service="ns0/svc", endpoints=eps)
    # outside client → masqueraded; a pod inside the cluster CIDR (10.0.0.0/8) → not
    A.assert_masquerade(st, dst=f"{s0.cluster_ip}:80")
    A.assert_masquerade(st, dst=f"{s0.cluster_ip}:80", src="10.1.2.3", expected=False)
    with pytest.raises(AssertionError) as ei:
        A.assert_masquerade(st, service=f"{s0.namespace}/{s0.name}", src="10.1.2.3", verbose=False)
    msg = str(ei.value)
    assert msg.startswith(
        f"service ns0/svc0:p80 ({s0.cluster_ip}:80/tcp) from 10.1.2.3: expected masqueraded"
    )
    assert "p=1 not masqueraded" in msg
    # helpers
    assert A.count_rules(st, "endpoint-*", table="kube-proxy") == 2 * 6
    rules = A.service_rules(st, "ns0/svc0")
    assert any("numgen random mod 3" in r for r in rules)
    assert any(r.startswith("ip kube-proxy @service-ips: ") for r in rules)


def test_diff_assertions_on_real_captures(ns: NetnsExec) -> None:
    svcs = make_services(3, 2)
    ns.run(["iptables-restore"], input=kube_proxy_iptables(svcs[:2]).encode(), timeout=60)
    before = Snapshot("before", 1.0, nodes={"n1": _capture(ns)})
    A.assert_no_netfilter_change(before.diff(before))
    ns.run(["iptables-restore"], input=kube_proxy_iptables(svcs).encode(), timeout=60)
    after = Snapshot("after", 2.0, nodes={"n1": _capture(ns)})
    d = before.diff(after)
    new = svcs[2]

    found = A.assert_new_chains(d, ["KUBE-SVC-*", "KUBE-SEP-*"])
    assert new.svc_chain in found["n1"]
    A.assert_new_chains(d, new.svc_chain, node="n1")
    wrong = new.svc_chain[:-1] + ("A" if new.svc_chain[-1] != "A" else "B")
    with pytest.raises(AssertionError) as ei:
        A.assert_new_chains(d, wrong, verbose=False)
    assert f"node n1: no new chain in table nat matches '{wrong}'; did you mean {new.svc_chain}?" in str(
        ei.value
    )
    with pytest.raises(AssertionError, match=r"no new chain in table filter matches 'KUBE-SVC-\*'"):
        A.assert_new_chains(d, "KUBE-SVC-*", table="filter")
    with pytest.raises(AssertionError, match=r"no node 'n2' in the diff \(nodes: n1\)"):
        A.assert_new_chains(d, "KUBE-SVC-*", node="n2")

    with pytest.raises(AssertionError) as ei:
        A.assert_no_netfilter_change(d, verbose=False)
    msg = str(ei.value)
    assert msg.startswith("netfilter changed\nnode n1: ")
    assert f"+ chain nat {new.svc_chain}" in msg
    A.assert_no_netfilter_change(d, ignore_chains=["KUBE-SVC-*", "KUBE-SEP-*", "KUBE-SERVICES"])

    # helpers on snapshots
    assert A.count_rules(after, "KUBE-SEP-*") == 3 * 2 * 2
    assert A.count_rules(after, "KUBE-SERVICES", table="filter") == 0
    rules = A.service_rules(after, "default/svc-2")
    assert (
        f'-t nat -A {new.svc_chain} -m comment --comment "default/svc-2:http -> {new.endpoints[0]}"'
        in " ".join(rules)
    )
    assert all("svc-2" in r for r in rules)
    two = Snapshot("two", 3.0, nodes={"n1": before.nodes["n1"], "n2": after.nodes["n1"]})
    with pytest.raises(
        AssertionError, match=r"count_rules\('KUBE-SEP-\*'\) differs between nodes \(n1: 8, n2: 12\)"
    ):
        A.count_rules(two, "KUBE-SEP-*")
    assert A.count_rules(two, "KUBE-SEP-*", node="n2") == 12


def test_all_exported() -> None:
    for name in A.__all__:
        assert hasattr(A, name), name


def test_assert_dnat_to_resolves_service_from_etcd(ns: NetnsExec) -> None:
    """No kube-proxy comments in the rules: the ClusterIP/port come from the (JSON-stored) Service in etcd."""
    ns.run(
        ["iptables-restore"],
        input=b"*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        b":POSTROUTING ACCEPT [0:0]\n"
        b"-A PREROUTING -d 10.96.5.5/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.9:6443\n"
        b"COMMIT\n",
        timeout=60,
    )
    svc = _obj(
        "Service",
        "default",
        "api",
        spec={"clusterIP": "10.96.5.5", "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}]},
    )
    snap = Snapshot(
        "s",
        1.0,
        etcd=_state(3, {"/registry/services/specs/default/api": svc}),
        nodes={"n1": _capture(ns)},
    )
    A.assert_dnat_to(snap, service="default/api:https", endpoints=["10.0.0.9:6443"])
    (vip,) = A.find_services(snap)
    assert (vip.port_id, vip.ip, vip.port, vip.proto) == ("default/api:https", "10.96.5.5", 8443, "tcp")
