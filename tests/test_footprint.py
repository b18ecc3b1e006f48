"""The normalised node footprint of a step (``state/footprint.py``).

The first test makes a pod's network plumbing for real in two network namespaces — the way the ``ptp`` and
``bridge`` CNI plugins do (a veth, a /32 route, a per-pod ``CNI-<hash>`` chain jumped to from nat
POSTROUTING) — captures the node before and after with the real collector, diffs, and checks the footprint
against the roles the cluster's objects (a Pod and two Nodes, as the apiserver stores them) give the
addresses. ``tests/test_footprint_kind.py`` does the same on kind's real CNIs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from state_netns import capture, ns_fixture, snap

from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.etcd.capture import EtcdEntry, EtcdState
from pytest_k8sstate.node import netns
from pytest_k8sstate.state import StateDiff
from pytest_k8sstate.state.footprint import Footprint, footprint, normalise_name, roles_from
from pytest_k8sstate.state.nodediff import NodeDiff

__all__ = ["ns_fixture"]

POD_IP = "10.244.1.7"
CHAIN = "CNI-0123456789abcdef01234567"


def _entry(key: str, obj: dict[str, Any], rev: int = 5) -> EtcdEntry:
    value = json.dumps(obj).encode()
    return EtcdEntry(key, rev, rev, 1, len(value), value=value)


def _node(name: str, ip: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
        },
    }


def _pod(name: str, ip: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _etcd(*pods: tuple[str, str]) -> EtcdState:
    entries = {
        "/registry/minions/ct-worker": _entry(
            "/registry/minions/ct-worker", _node("ct-worker", "172.18.0.3", "10.244.1.0/24")
        ),
        "/registry/minions/ct-worker2": _entry(
            "/registry/minions/ct-worker2", _node("ct-worker2", "172.18.0.4", "10.244.2.0/24")
        ),
    }
    for name, ip in pods:
        key = f"/registry/pods/default/{name}"
        entries[key] = _entry(key, _pod(name, ip, "ct-worker"))
    return EtcdState(revision=5, prefix="/registry", entries=entries)


@pytest.mark.usefixtures("ns")
def test_a_real_pod_plumbing_normalises_to_roles_and_patterns(ns: Any) -> None:
    with netns.temporary("fpp") as pod:
        # the node's nat table exists before the pod (as kube-proxy's would)
        ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-d", "192.0.2.1/32", "-j", "RETURN"])
        before = snap("before", {"ct-worker": capture(ns)}, _etcd(("old", "10.244.1.2")))
        veth = "veth1a2b3c4d"
        ns.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
        ns.run(["ip", "link", "set", veth, "up"])
        ns.run(["ip", "addr", "add", "10.244.1.1/32", "dev", veth])
        ns.run(["ip", "route", "add", f"{POD_IP}/32", "dev", veth])
        ns.run(["ip", "route", "add", "10.244.2.0/24", "via", "10.244.2.0", "dev", veth, "onlink"])
        ns.run(["iptables", "-t", "nat", "-N", CHAIN])
        ns.run(["iptables", "-t", "nat", "-A", CHAIN, "-d", "10.244.1.0/24", "-j", "ACCEPT"])
        ns.run(["iptables", "-t", "nat", "-A", CHAIN, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"])
        ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", f"{POD_IP}/32", "-j", CHAIN])
        after = snap("after", {"ct-worker": capture(ns)}, _etcd(("old", "10.244.1.2"), ("web", POD_IP)))
    diff = before.diff(after)
    fp = footprint(diff, after, cluster="ct")
    assert list(fp.nodes) == ["worker"]  # the cluster's prefix is dropped
    worker = fp.nodes["worker"]
    assert worker.items("links", "added") == [("veth* (veth)", 1)]
    routes = dict(worker.items("routes", "added"))
    assert routes.get("<pod IP> dev veth*") == 1, routes
    assert routes.get("<other node's pod CIDR> via <other node's pod CIDR address> dev veth*") == 1, routes
    assert ("<node pod CIDR address>/32 dev veth*", 1) in worker.items("addrs", "added")
    assert worker.items("chains", "added") == [("nat CNI-…", 1)]
    rules = [t for t, _ in worker.items("rules", "added")]
    assert "nat POSTROUTING: -s <pod IP>/32 -j CNI-…" in rules, rules
    assert "nat CNI-…: -d <node pod CIDR> -j ACCEPT" in rules, rules
    assert not [t for t in json.dumps(fp.to_json()).split('"') if POD_IP in t or "1a2b3c4d" in t]
    assert Footprint.from_json(json.loads(json.dumps(fp.to_json()))) == fp


def test_roles_depend_on_the_node_and_on_what_the_step_created() -> None:
    etcd = _etcd(("old", "10.244.1.2"), ("web", POD_IP))
    after = snap("after", {}, etcd)
    diff = StateDiff()
    roles = roles_from(diff, after)
    # nothing was created in this diff: every pod is another pod
    assert roles.replace(f"{POD_IP} dev x", "ct-worker") == "<other pod IP> dev x"
    assert roles.replace("172.18.0.3", "ct-worker") == "<node IP>"
    assert roles.replace("172.18.0.3", "ct-worker2") == "<other node IP>"
    assert roles.replace("10.244.2.0/24 via 10.244.2.0", "ct-worker") == (
        "<other node's pod CIDR> via <other node's pod CIDR address>"
    )
    assert roles.replace("10.244.1.0/24", "ct-worker") == "<node pod CIDR>"
    # an address nobody owns stays; so do ports, MACs and partial matches
    assert roles.replace("8.8.8.8:53 aa:bb:cc:dd:ee:ff 10.244.1.2:8080", "ct-worker") == (
        "8.8.8.8:53 aa:bb:cc:dd:ee:ff <other pod IP>:8080"
    )


def test_malformed_objects_give_no_role_and_no_error() -> None:
    bad = {
        "/registry/minions/x": _entry(
            "/registry/minions/x", {"metadata": {"name": "x"}, "spec": {"podCIDR": "nope/99"}}
        ),
        "/registry/minions/y": _entry(
            "/registry/minions/y", {"metadata": {"name": 5}, "status": {"addresses": 3}}
        ),
        "/registry/pods/default/p": _entry("/registry/pods/default/p", {"status": {"podIPs": "10.0.0.1"}}),
    }
    after = snap("after", {}, EtcdState(revision=5, prefix="/registry", entries=bad))
    roles = roles_from(StateDiff(), after)
    assert roles.pod_cidrs == {"x": []}
    assert roles.replace("10.0.0.1 nope/99 999.1.1.1", "x") == "10.0.0.1 nope/99 999.1.1.1"


def test_generated_names_are_normalised_and_fixed_ones_kept() -> None:
    assert normalise_name("KUBE-SEP-JPAADZTWUNYJQEJV -j KUBE-MARK-MASQ") == "KUBE-SEP-… -j KUBE-MARK-MASQ"
    assert normalise_name("KUBE-SVC-FXIYY6OHUSNBITIX KUBE-POSTROUTING KUBE-SERVICES") == (
        "KUBE-SVC-… KUBE-POSTROUTING KUBE-SERVICES"
    )
    assert normalise_name("CNI-DN-0a1b2c3d4e5f60718293a4b5 CNI-HOSTPORT-DNAT") == "CNI-DN-… CNI-HOSTPORT-DNAT"
    assert normalise_name("service-ULMVA6XW-default/web/tcp/http") == "service-…-default/web/tcp/http"
    assert normalise_name("cni0 flannel.1 eth0 veth0 vethab12cd") == "cni0 flannel.1 eth0 veth0 veth*"
    assert normalise_name('id: "' + "ab" * 32 + '"') == 'id: "…"'


def test_a_link_whose_state_changed_is_one_changed_item() -> None:
    nd = NodeDiff(
        links_added=["cni0 (bridge) mtu 1500 UP", "veth99aabbcc (veth) mtu 1500 UP"],
        links_removed=["cni0 (bridge) mtu 1500 DOWN"],
    )
    fp = footprint(StateDiff(nodes={"n1": nd}))
    assert fp.nodes["n1"].items("links", "changed") == [("cni0 (bridge): DOWN mtu 1500 → UP mtu 1500", 1)]
    assert fp.nodes["n1"].items("links", "added") == [("veth* (veth)", 1)]
    assert not fp.nodes["n1"].items("links", "removed")


def test_a_new_node_is_one_item_counting_what_it_has() -> None:
    nd = NodeDiff(links_added=["eth0 (veth)", "lo"], rules_added=[("nat", "KUBE-SERVICES", "-j RETURN")])
    diff = StateDiff(nodes={"ct-worker2": nd}, nodes_added=["ct-worker2"])
    fp = footprint(diff, cluster="ct")
    assert fp.to_json() == {
        "nodes": {
            "worker2": {
                "node": {"added": [["2 links, 0 addrs, 0 routes, 0 chains, 1 rules, 0 nft_rules", 1]]}
            }
        }
    }


def test_two_pods_count_and_an_unchanged_node_is_left_out() -> None:
    nd = NodeDiff(links_added=["vethaaaaaaaa (veth)", "vethbbbbbbbb (veth)"])
    fp = footprint(StateDiff(nodes={"n1": nd, "n2": NodeDiff()}))
    assert list(fp.nodes) == ["n1"]
    assert fp.nodes["n1"].items("links", "added") == [("veth* (veth)", 2)]
    assert not footprint(StateDiff(nodes={"n2": NodeDiff()}))


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], 'an object with "nodes"'),
        ({"nodes": {"w": []}}, "an object of categories"),
        ({"nodes": {"w": {"links": []}}}, "links: an object of changes"),
        ({"nodes": {"w": {"links": {"added": [["x", "1"]]}}}}, "links.added: a list of [text, count]"),
    ],
)
def test_bad_footprint_json_names_the_field(doc: Any, fragment: str) -> None:
    with pytest.raises(ParseError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Footprint.from_json(doc)
