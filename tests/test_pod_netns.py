"""Pods' own network namespaces: a real "node" namespace with a "pod" namespace wired to it by a veth pair.

The capture runs inside the node's namespace (``NetnsExec``, as for a ``local`` node) and reads the pod's
namespace with ``ip -n``, as it does on a kind node for ``/var/run/netns/cni-…``. The crictl discovery is
driven by a stand-in ``crictl`` on PATH that answers what containerd's does, pointing at the real namespace.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from pytest_k8sstate.assertions import assert_pod_interface
from pytest_k8sstate.errors import ParseError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import NetnsExec
from pytest_k8sstate.node.pods import collect_pods, pods_from_crictl
from pytest_k8sstate.state import Snapshot
from pytest_k8sstate.state.diff import StateDiff

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
TAG = f"{os.getpid() % 100000}"


def _run(*argv: str) -> None:
    from pytest_k8sstate.node.exec import run_command

    run_command(argv, timeout=10)


@pytest.fixture
def node_with_pod() -> Iterator[tuple[NetnsExec, str]]:
    """Node ns ``k8ss-h-node-PID`` and pod ns ``k8ss-h-pod-PID`` joined by a veth (kindnet/ptp style: a /32
    on the node side, the pod's /24 with a default route via the node's gateway address)."""
    node_ns, pod_ns = f"k8ss-h-node-{TAG}", f"k8ss-h-pod-{TAG}"
    try:
        node = netns.create(node_ns)
        netns.create(pod_ns)
        node.run(["ip", "link", "add", f"veth{TAG}", "type", "veth", "peer", "name", "eth0", "netns", pod_ns])
        node.run(["ip", "addr", "add", "10.244.1.1/32", "dev", f"veth{TAG}"])
        node.run(["ip", "link", "set", f"veth{TAG}", "up"])
        pod = NetnsExec(pod_ns)
        pod.run(["ip", "addr", "add", "10.244.1.5/24", "dev", "eth0"])
        pod.run(["ip", "link", "set", "eth0", "up"])
        pod.run(["ip", "route", "add", "10.244.1.1/32", "dev", "eth0", "scope", "link"])
        pod.run(["ip", "route", "add", "default", "via", "10.244.1.1", "dev", "eth0"])
        yield NetnsExec(node_ns, node="kind-worker"), pod_ns
    finally:
        netns.delete(pod_ns)
        netns.delete(node_ns)
        assert not netns.exists(pod_ns)
        assert not netns.exists(node_ns)


@needs_root
def test_a_pods_interface_addresses_and_routes(node_with_pod: tuple[NetnsExec, str]) -> None:
    node, pod_ns = node_with_pod
    pods, errors = collect_pods(node, {"default/web-1": pod_ns, "default/gone": "k8ss-h-no-such-ns"})
    assert errors == {}
    web = pods["default/web-1"]
    assert web.interfaces() == ["eth0"]
    assert web.addresses() == ["10.244.1.5/24"]
    assert {(r["dst"], r["gateway"], r["dev"]) for r in web.routes} == {
        ("default", "10.244.1.1", "eth0"),
        ("10.244.1.0/24", None, "eth0"),
        ("10.244.1.1", None, "eth0"),
    }
    eth0 = next(li for li in web.links if li["ifname"] == "eth0")
    assert eth0["kind"] == "veth"
    gone = pods["default/gone"]  # an unreadable namespace: an error for that pod, the others kept
    assert gone.addrs == []
    assert "k8ss-h-no-such-ns" in gone.errors["addrs"]


@needs_root
def test_snapshot_pods_diff_and_assertion(node_with_pod: tuple[NetnsExec, str], tmp_path: Path) -> None:
    node, pod_ns = node_with_pod
    want = {"kind-worker": {"default/web-1": pod_ns}}
    before = Snapshot.capture("before", nodes=[node], pods=want, conntrack=True)
    assert before.pods["kind-worker"]["default/web-1"].addresses() == ["10.244.1.5/24"]
    assert before.pods["kind-worker"]["default/web-1"].conntrack == []  # captured, and empty
    pn = assert_pod_interface(before, "default/web-1", address="10.244.1.5", route="default via 10.244.1.1")
    assert pn.netns == pod_ns
    assert_pod_interface(
        before, "default/web-*", interface="eth*", address="10.244.1.5/24", route="10.244.1.0/24"
    )
    with pytest.raises(
        AssertionError, match=r"no address 10\.244\.1\.6 on eth0; addresses: 10\.244\.1\.5/24"
    ):
        assert_pod_interface(before, "default/web-1", address="10.244.1.6")
    with pytest.raises(
        AssertionError, match=r"no route '10\.96\.0\.0/12'; routes: .*default via 10\.244\.1\.1"
    ):
        assert_pod_interface(before, "default/web-1", route="10.96.0.0/12")
    with pytest.raises(AssertionError, match=r"no pod 'default/web-2'.*did you mean default/web-1"):
        assert_pod_interface(before, "default/web-2")
    # a second address and a route appear in the pod (as a CNI's second network would add them)
    pod = NetnsExec(pod_ns)
    pod.run(["ip", "addr", "add", "10.245.0.9/16", "dev", "eth0"])
    pod.run(["ip", "route", "add", "10.96.0.0/12", "via", "10.244.1.1", "dev", "eth0"])
    after = Snapshot.load(
        Snapshot.capture("after", nodes=[node], pods=want).save(tmp_path / "after.json.gz")
    )  # through a saved file: the pods part loads
    diff = before.diff(after)
    assert diff.pods is not None
    change = diff.pods.changed["kind-worker"]["default/web-1"]
    assert change.addrs_added == ["10.245.0.9/16 dev eth0"]
    assert "10.96.0.0/12 via 10.244.1.1 dev eth0" in change.routes_added
    assert change.addrs_removed == []
    assert change.links_added == []
    assert diff  # a pod change is a change
    text = diff.summary()
    assert "kind-worker: pod default/web-1: + addrs 10.245.0.9/16 dev eth0" in text
    again = StateDiff.from_json(json.loads(json.dumps(diff.to_json())))
    assert again.pods == diff.pods
    # the pod goes away
    netns.delete(pod_ns)
    gone = Snapshot.capture("gone", nodes=[node], pods={"kind-worker": {}})
    assert before.diff(gone).pods is not None
    assert before.diff(gone).pods.removed == {"kind-worker": ["default/web-1"]}  # type: ignore[union-attr]


def _fake_crictl(bindir: Path, pods: Sequence[tuple[str, str, str, str | None]]) -> None:
    """A ``crictl`` answering ``pods --state ready -q`` and ``inspectp -o json ID`` like containerd's."""
    docs = {}
    for pid, ns, name, path in pods:
        namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}]
        if path is not None:
            namespaces.append({"type": "network", "path": path})
        docs[pid] = {
            "status": {"id": pid, "metadata": {"name": name, "namespace": ns, "uid": "u", "attempt": 0}},
            "info": {"runtimeSpec": {"linux": {"namespaces": namespaces}}},
        }
    data = bindir / "crictl.json"
    data.write_text(json.dumps(docs))
    script = bindir / "crictl"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"docs = json.load(open({str(data)!r}))\n"
        "a = sys.argv[1:]\n"
        "if a[:1] == ['pods']:\n    print('\\n'.join(docs))\n"
        "elif a[:1] == ['inspectp']:\n    print(json.dumps(docs[a[-1]], indent=2))\n"
        "else:\n    sys.exit(2)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


class _PathExec(NetnsExec):
    """The node namespace with ``bindir`` first on PATH (where its crictl lives)."""

    def __init__(self, ns: str, node: str, bindir: Path) -> None:
        super().__init__(ns, node)
        self.bindir = bindir

    def command(self, argv: Sequence[str]) -> list[str]:
        return super().command(["env", f"PATH={self.bindir}:{os.environ.get('PATH', '')}", *argv])


@needs_root
def test_pods_found_with_crictl(node_with_pod: tuple[NetnsExec, str], tmp_path: Path) -> None:
    node, pod_ns = node_with_pod
    _fake_crictl(
        tmp_path,
        [
            ("a1", "default", "web-1", f"/var/run/netns/{pod_ns}"),
            ("b2", "kube-system", "kube-proxy-x", None),  # hostNetwork: no netns of its own
        ],
    )
    if any((Path(d) / "crictl").exists() for d in os.environ.get("PATH", "").split(":")):
        pytest.skip("a real crictl is installed: the no-crictl case cannot be shown")
    ex = _PathExec(node.netns, "kind-worker", tmp_path)
    snap = Snapshot.capture("s", nodes=[ex], pods=True)
    assert list(snap.pods["kind-worker"].pods) == ["default/web-1"]
    assert_pod_interface(snap, "default/web-1", address="10.244.1.5", node="kind-worker")
    # no crictl on the node: an error for the node, the snapshot still taken
    bare = Snapshot.capture("s", nodes=[_PathExec(node.netns, "kind-worker", tmp_path / "none")], pods=True)
    assert bare.pods["kind-worker"].pods == {}
    assert "crictl not found on node kind-worker" in bare.pods["kind-worker"].errors["*"]
    assert bare.nodes["kind-worker"].routes  # everything else captured


def test_crictl_inspect_output_is_read_strictly() -> None:
    doc = {
        "status": {"metadata": {"name": "web", "namespace": "prod"}},
        "info": {
            "runtimeSpec": {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/cni-1a2b"}]}}
        },
    }
    assert pods_from_crictl({"x": json.dumps(doc).encode()}) == {"prod/web": "cni-1a2b"}
    doc["info"]["runtimeSpec"]["linux"]["namespaces"][0]["path"] = "/proc/123/ns/net"  # type: ignore[index]
    assert pods_from_crictl({"x": json.dumps(doc).encode()}) == {}  # not a named netns: skipped
    with pytest.raises(ParseError, match="crictl inspectp x"):
        pods_from_crictl({"x": b"FATA[0000] connect: connection refused"})
    with pytest.raises(ParseError, match=r"status\.metadata\.name"):
        pods_from_crictl({"x": b"{}"})


def test_snapshot_pods_part_is_checked_at_load(tmp_path: Path) -> None:
    d = Snapshot("s", 1.0).to_json()
    d["pods"] = {
        "n1": {"node": "n1", "pods": {"default/a": {"pod": "default/a", "netns": "x", "addrs": "no"}}}
    }
    p = tmp_path / "s.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ParseError, match=r"at \$\.pods\.n1.*'addrs': a list of objects"):
        Snapshot.load(p)


@needs_root
def test_conntrack_entries_of_the_pod_bounded(node_with_pod: tuple[NetnsExec, str]) -> None:
    import sys

    node, pod_ns = node_with_pod
    pod = NetnsExec(pod_ns)
    # conntrack tracks a namespace once a rule there needs it (only the pod's own namespace is touched)
    pod.run(["nft", "add table inet k8ss; add chain inet k8ss out { type filter hook output priority 0; }"])
    pod.run(["nft", "add rule inet k8ss out ct state new accept"])
    send = "import socket\nfor p in (5301, 5302):\n    socket.socket(2, 2).sendto(b'x', ('10.244.1.1', p))\n"
    pod.run([sys.executable, "-c", send])
    pods, _ = collect_pods(node, {"default/web-1": pod_ns}, conntrack=True)
    ct = pods["default/web-1"].conntrack
    assert ct is not None
    assert sorted(ln.split("dport=")[1].split()[0] for ln in ct) == ["5301", "5302"]
    assert all("src=10.244.1.5 dst=10.244.1.1" in ln for ln in ct)
    cut, _ = collect_pods(node, {"default/web-1": pod_ns}, conntrack=True, max_conntrack=1)
    assert len(cut["default/web-1"].conntrack or []) == 1
    assert cut["default/web-1"].errors == {"conntrack": "cut: first 1 entries"}
