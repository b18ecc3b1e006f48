"""Link / address / route assertions on real network namespaces: a "pod" wired the way CNIs do it.

A second namespace plays the pod: a veth pair with one end moved into it, the host end with a /32 route to the
pod's IP (ptp, kindnet) or enslaved to a bridge (the bridge CNI), plus a route to another node's pod CIDR.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_k8sstate import assert_new_addresses, assert_new_links, assert_new_routes
from pytest_k8sstate.assertions import assert_removed_links, assert_removed_routes
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.capture import NodeState, collect_node
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.state import NodeDiff, Snapshot, StateDiff
from pytest_k8sstate.state.labels import Link, Route, parse_addr, parse_link, parse_route


@pytest.fixture
def node() -> Iterator[tuple[NetnsExec, NetnsExec]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and veth pairs (CAP_NET_ADMIN)")
    with netns.temporary("lnk") as host, netns.temporary("pod") as pod:
        yield host, pod


def _snap(label: str, state: NodeState) -> Snapshot:
    return Snapshot(label=label, taken_at=1_700_000_000.0, cluster={}, etcd=None, nodes={"node-1": state})


def _capture(ex: NetnsExec) -> NodeState:
    st = collect_node(ex, ipvs=False)
    assert not st.errors, st.errors
    return st


def _wire_pod(host: NetnsExec, pod: NetnsExec) -> None:
    """What a ptp-style CNI does for one pod: veth, /32 route, plus a route to another node's CIDR."""
    host.run(["ip", "link", "add", "vethk8s1", "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
    host.run(["ip", "addr", "add", "10.244.0.1/32", "dev", "vethk8s1"])
    host.run(["ip", "link", "set", "vethk8s1", "up"])
    host.run(["ip", "route", "add", "10.244.0.5/32", "dev", "vethk8s1"])
    host.run(["ip", "route", "add", "10.244.1.0/24", "via", "10.244.0.5", "dev", "vethk8s1", "onlink"])


def test_a_pod_s_veth_and_routes_are_found(node: tuple[NetnsExec, NetnsExec]) -> None:
    host, pod = node
    before = _capture(host)
    _wire_pod(host, pod)
    diff = _snap("a", before).diff(_snap("b", _capture(host)))

    [(n, link)] = assert_new_links(diff, "veth*", kind="veth")
    assert (n, link.name, link.kind) == ("node-1", "vethk8s1", "veth")
    assert_new_links(diff, kind="veth", count=1)
    assert_new_addresses(diff, "10.244.0.1/32", dev="vethk8s1")
    # a host route: the /32 and the bare IP are the same network
    assert_new_routes(diff, "10.244.0.5", dev="vethk8s1", count=1)
    [(_, r)] = assert_new_routes(diff, "10.244.1.0/24", via="10.244.0.5")
    assert r.dev == "vethk8s1"

    back = _snap("b", _capture(host)).diff(_snap("c", before))
    assert_removed_links(back, "vethk8s1", count=1)
    assert_removed_routes(back, "10.244.1.0/24")


def test_failures_say_what_was_expected_and_what_is_there(node: tuple[NetnsExec, NetnsExec]) -> None:
    host, pod = node
    before = _capture(host)
    _wire_pod(host, pod)
    diff = _snap("a", before).diff(_snap("b", _capture(host)))

    with pytest.raises(AssertionError, match=r"expected at least one new links matching kind='bridge'") as e:
        assert_new_links(diff, kind="bridge")
    assert "node-1: vethk8s1 (veth)" in str(e.value)
    with pytest.raises(AssertionError, match=r"expected exactly 2 new routes matching dst='10\.244\.0\.5'"):
        assert_new_routes(diff, "10.244.0.5", count=2)
    with pytest.raises(AssertionError, match="found 0"):
        assert_new_routes(diff, "10.244.2.0/24")
    with pytest.raises(AssertionError, match="did you mean node-1"):
        assert_new_links(diff, node="node-2")
    nothing = _snap("a", before).diff(_snap("b", before))
    with pytest.raises(AssertionError, match="the diff has no new routes at all"):
        assert_new_routes(nothing)


def test_a_bridge_and_its_enslaved_veth(node: tuple[NetnsExec, NetnsExec]) -> None:
    """The bridge CNI: cni0 with the gateway address, the pod's host veth enslaved to it."""
    host, pod = node
    before = _capture(host)
    host.run(["ip", "link", "add", "cni0", "type", "bridge"])
    host.run(["ip", "addr", "add", "10.244.0.1/24", "dev", "cni0"])
    host.run(["ip", "link", "set", "cni0", "up"])
    host.run(["ip", "link", "add", "vethbr1", "type", "veth", "peer", "name", "eth0", "netns", pod.netns])
    host.run(["ip", "link", "set", "vethbr1", "master", "cni0", "up"])
    diff = _snap("a", before).diff(_snap("b", _capture(host)))

    assert_new_links(diff, "cni0", kind="bridge", count=1)
    assert_new_links(diff, "vethbr1", kind="veth", count=1)
    # the kernel adds the connected route of the bridge's subnet
    assert_new_routes(diff, "10.244.0.0/24", dev="cni0", count=1)
    assert_new_addresses(diff, "10.244.0.1/24", dev="cni0")


def test_labels_parse_back_to_their_fields() -> None:
    assert parse_link("veth1a2b (veth) mtu 1500 UP") == Link("veth1a2b", "veth", 1500, "UP")
    assert parse_link("lo mtu 65536 UNKNOWN") == Link("lo", None, 65536, "UNKNOWN")
    assert parse_link('{"x":1}') is None
    assert parse_route("default via 172.18.0.1 dev eth0") == Route(
        "default", "unicast", "172.18.0.1", "eth0", None
    )
    assert parse_route("local 10.0.0.1 dev lo table local") == Route("10.0.0.1", "local", None, "lo", "local")
    assert parse_route("blackhole 10.244.0.0/24") == Route("10.244.0.0/24", "blackhole", None, None, None)
    addr = parse_addr("fd00:10:244::1/64 dev cni0")
    assert addr is not None
    assert (addr.address, addr.dev) == ("fd00:10:244::1/64", "cni0")


def test_a_bad_dst_filter_is_a_clear_error() -> None:
    diff = StateDiff(nodes={"n": NodeDiff(routes_added=["10.0.0.0/8 dev eth0"])})
    with pytest.raises(ValueError, match="'ten' is not an IP address, a CIDR, 'default' or a glob"):
        assert_new_routes(diff, "ten")
    assert_new_routes(diff, "10.*", count=1)
    assert_new_routes(diff, "10.0.0.0/8", count=1)
