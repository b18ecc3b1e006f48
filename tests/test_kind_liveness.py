"""Liveness inside a kind cluster's nodes: kubelet, kube-proxy and the CNI agent, checked at every snapshot.

The probe and its reading run for real against this machine's own processes (a ``LocalExec`` "node": the
probe's own ``sh`` is a process that exists, a made-up name is one that does not). The end-to-end test
needs ``--k8sstate-provider kind`` (the project's Docker engine and node image): it creates a one-node
cluster, stops the kubelet and kills kube-proxy in the node, and the next ``cluster.snapshot()`` must name
both with their last log lines; the cluster is deleted at the end.
"""

from __future__ import annotations

import time

import pytest

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.node.exec import LocalExec
from pytest_k8sstate.providers.base import ClusterSpec
from pytest_k8sstate.providers.kind import liveness
from pytest_k8sstate.providers.kind.liveness import Component, check_components, dead_in, expected_components


def test_expected_components_follow_proxy_mode_and_cni() -> None:
    names = lambda mode, cni: [c.name for c in expected_components(mode, cni)]  # noqa: E731
    assert names("iptables", "kindnet") == ["kubelet", "kube-proxy", "kindnetd"]
    assert names("nftables", "ptp") == ["kubelet", "kube-proxy", "k8sstate-node-routes"]
    assert names("ipvs", "bridge") == ["kubelet", "kube-proxy", "k8sstate-node-routes"]
    assert names("iptables", "flannel") == ["kubelet", "kube-proxy", "k8sstate-node-routes", "flanneld"]
    assert names("none", None) == ["kubelet"]  # no kube-proxy, default CNI disabled


def test_probe_output_is_read_into_dead_components() -> None:
    comps = [liveness.KUBELET, liveness.KUBE_PROXY, liveness.NODE_ROUTES]
    out = "unit k8sstate-node-routes.service active\nunit kubelet.service inactive\n--\nsystemd\nkube-proxy\n"
    assert [(c.name, why) for c, why in dead_in(out, comps)] == [
        ("kubelet", "unit kubelet.service is inactive")
    ]
    out = "unit k8sstate-node-routes.service active\nunit kubelet.service active\n--\nkubelet\ncontainerd\n"
    assert [(c.name, why) for c, why in dead_in(out, comps)] == [("kube-proxy", "no kube-proxy process")]
    # the kernel keeps 15 characters of a process name
    long = Component("long", comm="a-very-long-process-name")
    assert dead_in("--\na-very-long-pro\n", [long]) == []
    # an output without the separator (a broken probe) finds nothing running
    assert [c.name for c, _ in dead_in("garbage", comps)] == ["kubelet", "kube-proxy", "k8sstate-node-routes"]


def test_check_components_runs_the_probe_and_names_what_is_missing() -> None:
    node = LocalExec("here")  # the probe for real on this machine: its own `sh` runs, `no-such-daemon` not
    check_components("c1", [("here", node)], [Component("sh", comm="sh")], grace=0)
    missing = Component("no-such-daemon", comm="no-such-daemon", container="no-such-daemon")
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        check_components("c1", [("here", node)], [Component("sh", comm="sh"), missing], grace=1.5)
    assert time.monotonic() - t0 >= 1.0  # looked again during the grace period
    msg = str(info.value)
    assert msg.startswith("kind cluster 'c1' is broken: no-such-daemon of node 'here' not running\n")
    assert "(no no-such-daemon process)" in msg
    assert "sh of node" not in msg
    assert "k8sstate cluster delete --name c1 --provider kind" in msg
    unit = Component("unit-x", unit="k8sstate-no-such-unit.service")
    with pytest.raises(
        ProviderError, match=r"unit-x of node 'here' is not running \(unit k8sstate-no-such-unit"
    ):
        check_components("c1", [("here", node)], [unit], grace=0)


# --------------------------------------------------------------------------------------------------
# a real kind cluster
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def kind_provider(request: pytest.FixtureRequest) -> object:
    if request.config.getoption("--k8sstate-provider", default=None) != "kind":
        pytest.skip("needs --k8sstate-provider kind (the project's Docker engine and a kind node image)")
    from pytest_k8sstate.providers.kind.provider import KindProvider

    return KindProvider(progress=lambda _line: None)


def test_stopped_kubelet_and_killed_kube_proxy_fail_the_next_snapshot(kind_provider: object) -> None:
    from pytest_k8sstate.providers.kind.provider import KindProvider

    assert isinstance(kind_provider, KindProvider)
    name = f"hrlive{int(time.time()) % 100000}"
    try:
        cluster = kind_provider.create(ClusterSpec(name=name, nodes=0, proxy_mode="iptables"))
        cluster.check_alive and cluster.check_alive()  # all running: nothing raised
        node = cluster.control_plane
        node.exec.run(["systemctl", "stop", "kubelet"], timeout=60)
        node.exec.run(["pkill", "-x", "kube-proxy"], timeout=30)
        with pytest.raises(ProviderError) as info:
            cluster.snapshot()
        msg = str(info.value)
        first = msg.splitlines()[0]
        assert first.startswith(f"kind cluster {name!r} is broken: ")
        assert f"kubelet of node '{node.name}'" in first
        assert f"kube-proxy of node '{node.name}'" in first
        assert "unit kubelet.service is inactive" in msg
        assert "last lines of journalctl -u kubelet.service" in msg
        assert "crictl logs of its last kube-proxy container" in msg
        assert "kindnetd" not in first  # the CNI agent still runs
        assert "k8sstate-node-routes of" not in first
    finally:
        kind_provider.delete(name)
