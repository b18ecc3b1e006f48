"""kind's ``fresh=True`` (providers/kind/reset.py) without a cluster: what it refuses and how it compares a
node with its pristine capture. ``tests/test_kind_fresh.py`` runs the whole reset on a real kind cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_k8sstate.errors import ProviderError
from pytest_k8sstate.providers.base import Cluster
from pytest_k8sstate.providers.kind import reset as kind_reset


def _cluster(name: str = "kr") -> Cluster:
    return Cluster(
        name=name,
        provider="kind",
        kubeconfig=Path("/nonexistent"),
        api_server="https://127.0.0.1:1",
        nodes=[],
        etcd=None,
        capabilities=frozenset({"etcd", "iptables", "container-runtime"}),
        proxy_mode="iptables",
    )


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]", '{"n": 3}', '{"n": {"pods": 7}}'])
def test_a_cluster_without_a_readable_capture_is_refused_with_the_fix(
    tmp_path: Path, content: str | None
) -> None:
    if content is not None:
        (tmp_path / kind_reset.NODES_FILE).write_text(content)
    with pytest.raises(ProviderError) as err:
        kind_reset.reset(_cluster(), tmp_path, ip6=False, timeout=1)
    msg = str(err.value)
    assert str(tmp_path / kind_reset.NODES_FILE) in msg
    assert "no pristine capture of kind cluster 'kr'" in msg
    assert "k8sstate cluster delete --name kr --provider kind" in msg


def test_random_veth_names_compare_equal_but_an_extra_pod_route_or_link_does_not() -> None:
    norm = kind_reset._normalise
    want = {
        "pods": ["kube-system/coredns-1"],
        "links": sorted(norm(x) for x in ["eth0", "lo", "veth1a2b3c4d"]),
        "routes": [norm("10.244.0.2 dev veth1a2b3c4d scope host"), "default via 172.18.0.1 dev eth0"],
    }
    same = {
        "pods": ["kube-system/coredns-1"],
        "links": sorted(norm(x) for x in ["eth0", "lo", "veth99ff00aa"]),
        "routes": ["default via 172.18.0.1 dev eth0", norm("10.244.0.2 dev veth99ff00aa scope host")],
    }
    assert kind_reset._differences(want, same) is None
    extra_pod = {**same, "pods": [*same["pods"], "default/web-1"]}
    assert kind_reset._differences(want, extra_pod) == "pods differ (extra ['default/web-1'], missing [])"
    extra_veth = {**same, "links": sorted([*same["links"], norm("veth0000beef")])}
    # a second veth: the same normalised name, counted
    assert kind_reset._differences(want, extra_veth) == "links differ (extra ['veth'], missing [])"
    extra_route = {**same, "routes": [*same["routes"], norm("10.244.0.9 dev vethdeadbeef scope host")]}
    assert "routes differ (extra ['10.244.0.9 dev veth scope host']" in str(
        kind_reset._differences(want, extra_route)
    )


@pytest.mark.parametrize(
    "content", ["", '{"etcd": []}', '{"etcd": {"a": "!!"}, "rules": {}}', '{"rules": {}}']
)
def test_an_unreadable_etcd_and_rules_capture_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / kind_reset.NODES_FILE).write_text(
        '{"kr-control-plane": {"pods": [], "links": [], "routes": []}}'
    )
    (tmp_path / "pristine.json").write_text(content)
    with pytest.raises(
        ProviderError, match=r"pristine\.json: pristine capture of cluster 'kr' unreadable \("
    ):
        kind_reset.reset(_cluster(), tmp_path, ip6=False, timeout=1)
