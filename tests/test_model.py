"""Snapshot / StateDiff: real captures of network namespaces the tests create, real etcd states."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_fixtures import (
    etcd_server,  # noqa: F401 - the shared real-etcd fixture
    k8s_value,
    pod,
    service,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.etcd.capture import EtcdClient, EtcdEntry, EtcdState, collect_etcd
from pytest_k8sstate.etcd.server import EtcdServer
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.parse.ipvs import parse_ipvsadm
from pytest_k8sstate.state.model import (
    DEFAULT_IGNORE,
    KeyChange,
    NodeDiff,
    Snapshot,
    StateDiff,
    changed_field_paths,
    key_matches,
)
from pytest_k8sstate.testing.iptables_gen import kube_proxy_iptables, make_services
from pytest_k8sstate.testing.nft_gen import generate_services, render_ruleset

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root: creates network namespaces and loads netfilter rules (CAP_NET_ADMIN)",
)


# --------------------------------------------------------------------------------------------------
# helpers


def restore(ns: NetnsExec, text: str, *, counters: bool = False, noflush: bool = False) -> None:
    argv = ["iptables-restore"]
    if counters:
        argv.append("-c")
    if noflush:
        argv.append("--noflush")
    ns.run(argv, input=text.encode(), timeout=60)


def capture(ns: NetnsExec) -> NodeState:
    state = collect_node(ns, ipvs=False)
    assert not state.errors, state.errors
    return state


def snap(label: str, nodes: dict[str, NodeState], etcd: object = None) -> Snapshot:
    return Snapshot(label=label, taken_at=1_700_000_000.0, cluster={"name": "t"}, etcd=etcd, nodes=nodes)  # type: ignore[arg-type]


@pytest.fixture
def ns() -> Iterator[NetnsExec]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces (CAP_NET_ADMIN)")
    with netns.temporary("h4m") as n:
        yield n


# --------------------------------------------------------------------------------------------------
# key patterns


@pytest.mark.parametrize(
    ("pattern", "key", "ok"),
    [
        ("/registry/leases/**", "/registry/leases/kube-node-lease/n1", True),
        ("/registry/leases/**", "/registry/leases", True),
        ("/registry/leases/**", "/registry/leasesx/a", False),
        ("/registry/pods/*/web", "/registry/pods/default/web", True),
        ("/registry/pods/*/web", "/registry/pods/a/b/web", False),
        ("/registry/**/web-*", "/registry/endpointslices/default/web-x7k2p", True),
        ("services/specs/default/*", "/registry/services/specs/default/web", True),
        ("services/specs/default/*", "/registry/services/specs/kube-system/dns", False),
        ("/registry/pods/default/we?", "/registry/pods/default/web", True),
        ("/registry/minions/*", "/registry/minions/n1", True),
        ("/registry/pods/default/web.1", "/registry/pods/default/webx1", False),
    ],
)
def test_key_patterns(pattern: str, key: str, ok: bool) -> None:
    assert key_matches(pattern, key) is ok


def test_changed_field_paths_dotted_and_managed_fields_collapsed() -> None:
    before = {
        "metadata": {"labels": {"app": "a"}, "managedFields": [{"time": "1"}], "annotations": {"a.b/c": "x"}},
        "spec": {"ports": [{"port": 80}], "x": 1},
    }
    after = {
        "metadata": {
            "labels": {"app": "b", "new": "1"},
            "managedFields": [{"time": "2"}],
            "annotations": {"a.b/c": "y"},
        },
        "spec": {"ports": [{"port": 81}]},
        "status": {},
    }
    assert changed_field_paths(before, after) == [
        'metadata.annotations["a.b/c"]',
        "metadata.labels.app",
        "metadata.labels.new",
        "metadata.managedFields",
        "spec.ports[0].port",
        "spec.x",
        "status",
    ]
    assert changed_field_paths(before, before) == []


# --------------------------------------------------------------------------------------------------
# node diffs from real namespaces


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
    text = d.summary()
    assert f"+ chain nat {new.svc_chain}" in text
    assert "+ rule nat -A KUBE-SERVICES -s 192.0.2.1/32 -j RETURN" in text


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
    text = d.summary(limit=None)
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


# --------------------------------------------------------------------------------------------------
# save / load


@needs_root
def test_snapshot_round_trip_atomic_save_and_gzip(ns: NetnsExec, tmp_path: Path) -> None:
    restore(ns, kube_proxy_iptables(make_services(2, 3, node_ports=1)))
    ns.run(["nft", "-f", "-"], input=render_ruleset(generate_services(2, 2)).encode(), timeout=30)
    st = capture(ns)
    s = snap("before", {ns.node: st})
    path = tmp_path / "snap.json"
    path.write_text("old content")
    assert s.save(path) == path
    assert Snapshot.load(path) == s
    assert Snapshot.from_json(json.loads(path.read_text())) == s
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]  # no temp file left behind
    gz = s.save(tmp_path / "snap.json.gz")
    assert gzip.decompress(gz.read_bytes())[:1] == b"{"
    assert Snapshot.load(gz) == s
    assert "iptables nat" in s.summary()
    assert "nft ip kube-proxy" in s.summary()
    assert s.diff(Snapshot.load(path)).summary().endswith("no changes")


def test_save_failure_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    Snapshot("x", 1.0).save(path)
    good = path.read_bytes()
    bad = Snapshot("y", 2.0, cluster={"oops": object()})
    with pytest.raises(TypeError):
        bad.save(path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_load_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text('{"schema": 1,\n "label": "x",\n "taken_at": oops}\n')
    with pytest.raises(ParseError) as ei:
        Snapshot.load(p)
    assert ei.value.line == 3
    assert str(ei.value).startswith(f"{p}:3: expected valid JSON")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "at $: expected a JSON object"),
        ({"schema": 7}, "at $.schema: expected schema 1"),
        ({"schema": 1, "label": "x", "taken_at": "now", "cluster": {}, "nodes": {}}, "at $.taken_at"),
        ({"schema": 1, "label": "x", "taken_at": 1, "cluster": {}}, "at $.nodes: expected field 'nodes'"),
        (
            {"schema": 1, "label": "x", "taken_at": 1, "cluster": {}, "nodes": {"n1": {"links": 3}}},
            "at $.nodes.n1",
        ),
        (
            {"schema": 1, "label": "x", "taken_at": 1, "cluster": {}, "nodes": {}, "etcd": {"x": 1}},
            "at $.etcd",
        ),
    ],
)
def test_load_bad_schema_names_json_path(tmp_path: Path, doc: object, where: str) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ParseError) as ei:
        Snapshot.load(p)
    assert str(ei.value).startswith(f"{p} {where}"), str(ei.value)


def test_load_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from pytest_k8sstate.errors import K8sStateError

    with pytest.raises(K8sStateError, match=r"nope\.json: cannot read snapshot"):
        Snapshot.load(tmp_path / "nope.json")


# --------------------------------------------------------------------------------------------------
# StateDiff JSON / view without captures


def test_state_diff_view_hides_heartbeats_but_keeps_them_in_full_json() -> None:
    d = StateDiff()
    d.etcd.added = [KeyChange("/registry/services/specs/default/web", "Service", "default", "web")]
    d.etcd.modified = [
        KeyChange(
            "/registry/leases/kube-node-lease/n1", "Lease", "kube-node-lease", "n1", ["spec.renewTime"]
        ),
        KeyChange("/registry/minions/n1", "Node", None, "n1", ["status.conditions[0].lastHeartbeatTime"]),
    ]
    d.etcd.removed = [KeyChange("/registry/minions/n2", "Node", None, "n2")]
    assert d.ignore == DEFAULT_IGNORE
    full = d.to_json()
    assert full["etcd"]["modified"] == ["/registry/leases/kube-node-lease/n1", "/registry/minions/n1"]
    assert full["etcd"]["removed"] == ["/registry/minions/n2"]  # removal of a node stays visible
    view = d.to_json(full=False)
    assert view["etcd"]["modified"] == []
    assert view["etcd"]["hidden"] == {"added": 0, "removed": 0, "modified": 2}
    assert [c.key for c in d.etcd_modified()] == []
    assert len(d.etcd_modified(include_ignored=True)) == 2
    assert d.view(ignore=(), ignore_modified=()).etcd.modified == d.etcd.modified
    assert StateDiff.from_json(json.loads(json.dumps(full))) == d
    text = d.summary()
    assert "2 modified hidden by ignore patterns" in text
    assert "+ /registry/services/specs/default/web  [Service]" in text
    assert "spec.renewTime" in d.summary(full=True)
    assert NodeDiff.from_json(NodeDiff(chains_added=[("nat", "X")]).to_json()) == NodeDiff(
        chains_added=[("nat", "X")]
    )


# --------------------------------------------------------------------------------------------------
# etcd diffs


def _entry(key: str, value: bytes, rev: int) -> EtcdEntry:
    return EtcdEntry(key, rev, rev, 1, len(value), value=value)


def _json(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode()


def _lease(renew: str) -> bytes:
    return _json({"kind": "Lease", "metadata": {"name": "node-1"}, "spec": {"renewTime": renew}})


def _cm(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> bytes:
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {}}
    return _json({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def test_etcd_diff_logic_on_constructed_states() -> None:
    """Diff logic only: EtcdState objects built from real JSON / encrypted values (no server needed)."""
    k_keep = "/registry/configmaps/default/keep"
    k_mod = "/registry/configmaps/default/mod"
    k_gone = "/registry/configmaps/default/gone"
    k_new = "/registry/configmaps/default/new"
    k_enc = "/registry/secrets/default/s"
    k_rewrite = "/registry/configmaps/default/rewrite"
    before = EtcdState(
        10,
        "/registry",
        {
            k_keep: _entry(k_keep, _cm("keep", {"a": "1"}), 2),
            k_mod: _entry(k_mod, _cm("mod", {"a": "1"}, {"app": "x"}), 3),
            k_gone: _entry(k_gone, _cm("gone", {}), 4),
            k_enc: _entry(k_enc, b"k8s:enc:aescbc:v1:key1:\x00\x01\x02", 5),
            k_rewrite: _entry(k_rewrite, _cm("rewrite", {}), 6),
        },
    )
    after = EtcdState(
        20,
        "/registry",
        {
            k_keep: _entry(k_keep, _cm("keep", {"a": "1"}), 2),
            k_mod: _entry(k_mod, _cm("mod", {"a": "2"}, {"app": "y"}), 15),
            k_new: _entry(k_new, _cm("new", {}), 16),
            k_enc: _entry(k_enc, b"k8s:enc:aescbc:v1:key1:\x00\x09\x09", 17),
            k_rewrite: _entry(k_rewrite, _cm("rewrite", {}), 18),
        },
    )
    d = Snapshot("b", 1.0, etcd=before).diff(Snapshot("a", 2.0, etcd=after))
    assert (d.before_revision, d.after_revision) == (10, 20)
    assert [c.key for c in d.etcd.added] == [k_new]
    assert d.etcd.added[0].identity == "ConfigMap default/new"
    assert [c.key for c in d.etcd.removed] == [k_gone]
    mods = {c.key: c for c in d.etcd.modified}
    assert set(mods) == {k_mod, k_enc, k_rewrite}
    assert mods[k_mod].changed_fields == ["data.a", "metadata.labels.app"]
    assert mods[k_enc].changed_fields is None  # encrypted: cannot tell which fields
    assert mods[k_rewrite].changed_fields == []  # same content, new mod_revision
    text = d.summary()
    assert "~ /registry/configmaps/default/mod  [ConfigMap]  data.a, metadata.labels.app" in text
    assert "(value not decoded)" in text
    assert "(rewritten, same content)" in text
    # etcd captured on one side only: not compared, said so
    d2 = Snapshot("b", 1.0).diff(Snapshot("a", 2.0, etcd=after))
    assert not d2.etcd
    assert d2.notes == ["etcd not captured in 'b': etcd keys not compared"]


def test_etcd_diff_real_server(etcd_server: EtcdServer, tmp_path: Path) -> None:  # noqa: F811
    """Real etcd (client-cert TLS) with protobuf-encoded Kubernetes values; capture, diff, save/load."""
    svc_key = "/registry/services/specs/default/web"
    pod_key = "/registry/pods/default/web-0"
    lease_key = "/registry/leases/kube-node-lease/node-1"
    with EtcdClient(etcd_server.target) as c:
        c.delete(b"\x00", range_end=b"\x00")
        c.put(pod_key, k8s_value("v1", "Pod", pod("default", "web-0", uid="u-pod")))
        c.put(
            lease_key, _json({"kind": "Lease", "metadata": {"name": "node-1"}, "spec": {"renewTime": "t1"}})
        )
        before = Snapshot("before", 1.0, etcd=collect_etcd(c))
        c.put(svc_key, k8s_value("v1", "Service", service("default", "web", uid="u-svc")))
        c.put(pod_key, k8s_value("v1", "Pod", pod("default", "web-0", uid="u-pod", labels={"app": "web2"})))
        c.put(
            lease_key, _json({"kind": "Lease", "metadata": {"name": "node-1"}, "spec": {"renewTime": "t2"}})
        )
        after = Snapshot("after", 2.0, etcd=collect_etcd(c))
    d = before.diff(after)
    assert [(x.key, x.kind, x.namespace, x.name) for x in d.etcd_added()] == [
        (svc_key, "Service", "default", "web")
    ]
    assert [x.key for x in d.etcd_modified()] == [pod_key]  # the lease is hidden from the view...
    assert {x.key for x in d.etcd_modified(include_ignored=True)} == {pod_key, lease_key}
    assert d.to_json()["etcd"]["modified"] == [lease_key, pod_key]  # ...but kept in the data
    pod_change = d.etcd_modified()[0]
    assert pod_change.changed_fields is not None
    assert "metadata.labels.app" in pod_change.changed_fields
    # save / load keeps everything
    after.save(tmp_path / "after.json")
    assert Snapshot.load(tmp_path / "after.json") == after
    assert "services/specs" in after.summary()


# --------------------------------------------------------------------------------------------------
# fuzz: malformed snapshot files raise ParseError only

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_node_like = st.fixed_dictionaries(
    {},
    optional={
        "node": _json_values,
        "iptables": _json_values,
        "nft": _json_values,
        "ipsets": _json_values,
        "ipvs": _json_values,
        "links": _json_values,
        "addrs": _json_values,
        "routes": _json_values,
        "errors": _json_values,
    },
)
_snapshot_like = st.fixed_dictionaries(
    {
        "schema": st.just(1),
        "label": st.text(max_size=5),
        "taken_at": st.floats(0, 2e9),
        "cluster": st.just({}),
    },
    optional={
        "nodes": st.dictionaries(st.text(max_size=5), _node_like | _json_values, max_size=2),
        "etcd": st.fixed_dictionaries(
            {}, optional={"revision": _json_values, "prefix": _json_values, "entries": _json_values}
        )
        | _json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_snapshot_like | _json_values)
def test_fuzz_from_json_raises_only_parse_error(doc: object) -> None:
    msg = "fuzz.json at $"
    try:
        Snapshot.from_json(doc, source="fuzz.json")
    except ParseError as exc:
        msg = str(exc)
    assert msg.startswith("fuzz.json at $")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200))
def test_fuzz_load_bytes_raises_only_parse_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    p = tmp_path_factory.mktemp("fz") / "s.json"
    p.write_bytes(data)
    msg = str(p)
    try:
        Snapshot.load(p)
    except ParseError as exc:
        msg = str(exc)
    assert msg.startswith(str(p))


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
