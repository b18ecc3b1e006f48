"""The probe client (pytest_k8sstate.traffic.probe / targets): real connections on loopback and in a netns.

Real over mock: the busybox client runs for real against a real agnhost ``netexec`` on this machine's
loopback; refused and timed-out connections come from real REJECT/DROP rules inside a project network
namespace (never the root one). Parsing and argument checks are tested on literal output.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_k8sstate.binaries import find_binary
from pytest_k8sstate.cli.main import main
from pytest_k8sstate.errors import ConfigError, K8sStateError
from pytest_k8sstate.node import netns
from pytest_k8sstate.node.exec import LocalExec
from pytest_k8sstate.traffic.probe import (
    HOST_BUSYBOX,
    Connection,
    PodExec,
    ProbeResult,
    classify,
    install_busybox,
    parse_probe_output,
    run_probe,
)
from pytest_k8sstate.traffic.targets import (
    Source,
    Target,
    check_in_cluster,
    cluster_ranges,
    parse_source,
    parse_target,
    probe,
)

needs_busybox = pytest.mark.skipif(
    not Path(HOST_BUSYBOX).is_file(), reason=f"{HOST_BUSYBOX} missing: apt-get install busybox-static"
)
OK = (
    "HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nweb-a"
    "HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 16\r\nConnection: close\r\n\r\n10.244.0.1:51234"
)


def test_classify_outcomes():
    assert classify(0, OK) == Connection(0, "ok", "web-a", "10.244.0.1:51234")
    assert classify(0, OK).client_ip == "10.244.0.1"
    refused = classify(1, "nc: can't connect to remote host (10.96.0.60): Connection refused")
    assert refused.outcome == "refused"
    assert "10.96.0.60" in refused.detail
    assert classify(1, "nc: timed out").outcome == "timeout"
    assert classify(143, "").outcome == "timeout"  # busybox timeout killed a connected, silent nc
    assert classify(1, "nc: can't connect ...: No route to host").outcome == "unreachable"
    odd = classify(0, "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!")
    assert odd.outcome == "error"
    assert "HTTP 404" in odd.detail


def test_parse_probe_output_and_truncation():
    text = f"\n@@k8ss-probe 1 0\n{OK}\n@@k8ss-probe 2 1\nnc: timed out\n@@k8ss-probe end\n"
    conns = parse_probe_output(text, 2)
    assert [(c.index, c.outcome, c.backend) for c in conns] == [(1, "ok", "web-a"), (2, "timeout", None)]
    with pytest.raises(K8sStateError, match="1 of 2 connections and no end marker"):
        parse_probe_output(f"\n@@k8ss-probe 1 0\n{OK}", 2, where="probe x")
    with pytest.raises(K8sStateError, match="unexpected probe output line"):
        parse_probe_output("\n@@k8ss-probe one two three\n", 1)


def test_probe_result_json_round_trip_and_counts():
    r = ProbeResult(
        "10.96.0.50:80",
        "node/n1",
        (Connection(1, "ok", "web-a", "1.2.3.4:5"), Connection(2, "refused", detail="x")),
        0.5,
        "1.2.3.4",
        {"web-a": "10.244.0.5"},
    )
    assert ProbeResult.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.counts() == {"web-a": 1, "refused": 1}
    assert r.clients_by_backend() == {"web-a": {"1.2.3.4"}}
    assert r.rate == 4.0


def test_targets_and_sources():
    assert parse_target("default/web:80") == Target("default", "web", "80")
    assert parse_target("kube-system/kube-dns:dns-tcp") == Target("kube-system", "kube-dns", "dns-tcp")
    assert parse_target("default/web") == Target("default", "web", None)
    assert parse_target("10.96.0.10:53") == Target(ip="10.96.0.10", port="53")
    assert str(parse_target("172.18.0.2:30080")) == "172.18.0.2:30080"
    assert parse_source("node/kind-worker") == Source("node", "kind-worker")
    assert parse_source("pod/default/client") == Source("pod", "client", "default")
    for bad in ("web", "10.96.0.10", "10.96.0.10:99999", "Default/Web:80"):
        with pytest.raises(ConfigError, match="--to"):
            parse_target(bad)
    for bad in ("kind-worker", "pod/client", "svc/default/x"):
        with pytest.raises(ConfigError, match="--from"):
            parse_source(bad)


def test_pod_exec_command():
    p = PodExec("default", "client", kubeconfig="/k", kubectl="/bin/kubectl")
    assert p.command(["sh", "-c", "x"]) == [
        "/bin/kubectl", "--kubeconfig", "/k", "-n", "default", "exec", "-i", "client", "--", "sh", "-c", "x"
    ]  # fmt: skip
    assert p.where == "pod/default/client"


def test_bad_probe_arguments_are_config_errors():
    local = LocalExec("local")
    with pytest.raises(ConfigError, match="not an IP address"):
        run_probe(local, "web.default", 80, 1, busybox=HOST_BUSYBOX, source="local")
    with pytest.raises(ConfigError, match="count"):
        run_probe(local, "127.0.0.1", 80, 0, busybox=HOST_BUSYBOX, source="local")
    with pytest.raises(ConfigError, match="timeout"):
        run_probe(local, "127.0.0.1", 80, 1, busybox=HOST_BUSYBOX, source="local", timeout=0.2)


def test_cli_probe_bad_input_is_one_line(capsys):
    assert main(["probe", "--cluster", "nope", "--to", "web"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--to 'web'" in err[0]
    assert "NAMESPACE/SERVICE" in err[0]
    assert main(["probe", "--cluster", "nope", "--to", "default/web", "--count", "0"]) == 2


class _OwnFilesystem(LocalExec):
    """Stands in for a node with a filesystem of its own (a kind container): here it is this machine's, so
    the copy can be checked where the test can see it."""


@needs_busybox
def test_a_node_sharing_this_filesystem_runs_the_host_busybox_and_nothing_is_written(tmp_path):
    target = tmp_path / "opt" / "busybox"
    assert install_busybox(LocalExec("local"), path=str(target)) == HOST_BUSYBOX
    assert not target.exists()
    with pytest.raises(ConfigError, match="busybox-static"):
        install_busybox(LocalExec("local"), Path(tmp_path / "missing"), path=str(target))


@needs_busybox
def test_install_busybox_copies_once(tmp_path):
    target = str(tmp_path / "opt" / "busybox")
    local = _OwnFilesystem("local")
    assert install_busybox(local, path=target) == target
    assert local.run([target, "echo", "hi"]).text == "hi\n"  # runs as busybox: the applet from argv[1]
    mtime = os.stat(target).st_mtime_ns
    install_busybox(local, path=target)
    assert os.stat(target).st_mtime_ns == mtime
    with pytest.raises(ConfigError, match="busybox-static"):
        install_busybox(local, Path(tmp_path / "missing"), path=target)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def netexec() -> Iterator[int]:
    """A real agnhost netexec on 127.0.0.1 (the binaries cache's static agnhost)."""
    agnhost = find_binary("agnhost")
    if agnhost is None:
        pytest.skip("agnhost not in the binaries cache: k8sstate binaries install --components agnhost")
    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603
        [str(agnhost), "netexec", f"--http-port={port}", "--udp-port=-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, "agnhost netexec exited"
            assert time.monotonic() < deadline, "agnhost netexec did not listen within 20 s"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@needs_busybox
def test_probe_real_agnhost_on_loopback(netexec):
    r = run_probe(LocalExec("local"), "127.0.0.1", netexec, 40, busybox=HOST_BUSYBOX, source="local")
    assert r.counts() == {socket.gethostname(): 40}
    assert r.clients_by_backend() == {socket.gethostname(): {"127.0.0.1"}}
    ports = {c.client for c in r.connections}
    assert len(ports) == 40  # one connection each (both requests of a connection share its source port)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a project network namespace)")


@needs_root
@needs_busybox
def test_refused_and_timeouts_from_real_rules_in_a_netns():
    """On loopback: REJECT with tcp-reset → refused, DROP → timeout, a closed port → refused, a listener that
    never answers → timeout."""
    with netns.temporary("probe") as ns:
        for rule in (
            ["--dport", "9", "-j", "DROP"],
            ["--dport", "10", "-j", "REJECT", "--reject-with", "tcp-reset"],
        ):
            ns.run(["iptables", "-A", "OUTPUT", "-p", "tcp", *rule], timeout=10)
        silent = subprocess.Popen(  # noqa: S603
            [
                "ip", "netns", "exec", ns.netns, "python3", "-c",
                "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',11)); s.listen(8); "
                "time.sleep(30)",
            ],
            start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(0.5)
            out = {
                port: run_probe(ns, "127.0.0.1", port, 2, busybox=HOST_BUSYBOX, source="netns", timeout=1)
                for port in (9, 10, 11, 12)
            }
        finally:
            silent.kill()
            silent.wait(timeout=10)
    assert out[9].outcomes() == {"timeout": 2}
    assert out[10].outcomes() == {"refused": 2}
    assert out[11].outcomes() == {"timeout": 2}
    assert out[12].outcomes() == {"refused": 2}
    assert out[9].seconds < 2 * 1 + 5  # bounded by the per-connection timeout


@needs_root
@needs_busybox
def test_icmp_reject_over_a_veth_is_refused():
    """kube-proxy's REJECT (icmp-port-unreachable) in OUTPUT, as for a node's connection to a Service without
    endpoints, between two project namespaces: refused. (On loopback this kernel, 6.18, drops that ICMP
    error: such a probe would time out; and busybox's ``nc -w`` reports it as "timed out" even over a veth,
    which is why the probe bounds connections with ``timeout`` instead.)"""
    with netns.temporary("pra") as a, netns.temporary("prb") as b:
        a.run(["ip", "link", "add", "k8ssp0", "type", "veth", "peer", "name", "k8ssp1", "netns", b.netns])
        a.run(["ip", "addr", "add", "10.77.0.1/24", "dev", "k8ssp0"])
        a.run(["ip", "link", "set", "k8ssp0", "up"])
        b.run(["ip", "addr", "add", "10.77.0.2/24", "dev", "k8ssp1"])
        b.run(["ip", "link", "set", "k8ssp1", "up"])
        a.run(["iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "13", "-j", "REJECT"])
        r = run_probe(a, "10.77.0.2", 13, 3, busybox=HOST_BUSYBOX, source="netns", timeout=2)
    assert r.outcomes() == {"refused": 3}, r.connections


def test_cli_render_shows_split_and_sources():
    from pytest_k8sstate.cli.probe import render

    conns = (Connection(1, "ok", "web-a", "172.18.0.2:1"), Connection(2, "ok", "web-a", "172.18.0.2:2"))
    r = ProbeResult(
        "10.96.0.50:80",
        "node/n1",
        (*conns, Connection(3, "refused")),
        1.5,
        "172.18.0.2",
        {"web-a": "10.244.1.5"},
    )
    lines = render(r)
    assert lines[0] == "3 connections from node/n1 to 10.96.0.50:80 in 1.5s (2/s)"
    assert lines[1].split() == ["web-a", "2", "66.67%", "(10.244.1.5)", "saw", "172.18.0.2"]
    assert lines[2].split() == ["refused", "1", "33.33%"]


# --- probes go only to the cluster's own addresses ------------------------------------------------
_KUBECTL_STANDIN = """#!/bin/sh
# stands in for kubectl (no apiserver here): prints the list asked for, from files beside this script
for a in "$@"; do
  case "$a" in servicecidrs|nodes|services|pods) exec cat "$(dirname "$0")/$a.json";; esac
done
exit 1
"""


def _standin_kubectl(tmp_path, *, servicecidrs=True):
    d = tmp_path / "kubectl"
    d.mkdir()
    node = {
        "metadata": {"name": "c-worker"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.3"}]},
    }
    svc = {
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"clusterIPs": ["10.96.7.7"], "externalIPs": ["192.0.2.50"]},
    }
    pod = {"metadata": {"namespace": "default", "name": "p"}, "status": {"podIPs": [{"ip": "10.250.0.9"}]}}
    lists = {"nodes": [node], "services": [svc], "pods": [pod]}
    if servicecidrs:
        lists["servicecidrs"] = [{"spec": {"cidrs": ["10.96.0.0/16", "fd00:10:96::/112"]}}]
    for name, items in lists.items():
        (d / f"{name}.json").write_text(json.dumps({"items": items}))
    exe = d / "kubectl"
    exe.write_text(_KUBECTL_STANDIN)
    exe.chmod(0o755)
    return str(exe)


class _NoExec(LocalExec):
    def run(self, *a, **kw):  # a refused probe must not run anything in a node
        raise AssertionError("the probe ran in the node")


class _Cluster:
    name = "c"
    kubeconfig = "/nonexistent/kubeconfig"
    nodes = (type("N", (), {"name": "c-control-plane", "ip": "172.18.0.2", "exec": _NoExec("n")})(),)

    def node(self, name):
        return self.nodes[0]


@pytest.mark.parametrize(
    ("ip", "what"),
    [
        ("10.96.200.1", "the Service range"),
        ("fd00:10:96::a", "the Service range"),
        ("10.244.1.77", "the pod range of node c-worker"),
        ("172.18.0.3", "node c-worker"),
        ("172.18.0.2", "node c-control-plane"),
        ("192.0.2.50", "Service default/web"),
        ("10.250.0.9", "pod default/p"),
    ],
)
def test_cluster_addresses_are_found_in_what_kubectl_lists(tmp_path, ip, what):
    kubectl = _standin_kubectl(tmp_path)
    ranges = cluster_ranges(_Cluster(), kubectl=kubectl, kubeconfig="/k")
    host = f"[{ip}]" if ":" in ip else ip
    assert check_in_cluster(ip, ranges, "c", parse_target(f"{host}:80")) == what


@pytest.mark.parametrize("ip", ["8.8.8.8", "127.0.0.1", "10.97.0.1", "10.244.2.1", "2001:db8::1"])
def test_a_probe_to_an_address_outside_the_cluster_is_refused_before_any_connection(tmp_path, ip):
    kubectl = _standin_kubectl(tmp_path)
    host = f"[{ip}]" if ":" in ip else ip
    with pytest.raises(ConfigError) as info:
        probe(_Cluster(), f"{host}:53", kubectl=kubectl)
    msg = str(info.value)
    assert msg.startswith(f"--to {ip}:53: {ip} is not an address of cluster 'c' ("), msg
    assert "the Service range 10.96.0.0/16" in msg
    assert "the pod range of node c-worker 10.244.1.0/24" in msg
    assert "node c-worker 172.18.0.3" in msg
    assert "probes only go to the cluster's own Services, pods and nodes" in msg
    assert "\n" not in msg


def test_without_the_servicecidr_api_the_services_own_ips_are_allowed(tmp_path):
    kubectl = _standin_kubectl(tmp_path, servicecidrs=False)
    ranges = cluster_ranges(_Cluster(), kubectl=kubectl, kubeconfig="/k")
    assert check_in_cluster("10.96.7.7", ranges, "c", parse_target("10.96.7.7:80")) == "Service default/web"
    with pytest.raises(ConfigError, match="not an address of cluster 'c'"):
        check_in_cluster("10.96.7.8", ranges, "c", parse_target("10.96.7.8:80"))
