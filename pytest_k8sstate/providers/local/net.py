"""Network plumbing of a ``local`` cluster: only project-owned namespaces, nothing in the root one.

Layout for cluster ``c`` with subnet index ``i``::

    k8ss-c-net            "the wire": bridge br0 = 172.31.i.1/24, one veth per node (veth<k>)
    k8ss-c-control-plane  eth0 = 172.31.i.2/24, default via .1; etcd, apiserver, ... run here
    k8ss-c-worker         eth0 = 172.31.i.3/24
    k8ss-c-worker2        eth0 = 172.31.i.4/24

IPv6 and dual-stack clusters (``ip_family`` ipv6/dual) also get the ULA subnet ``fd00:172:31:<i hex>::/64``
on the same wire: br0 ``::1``, node k ``::<k+2>`` (no duplicate address detection: the addresses are
usable at once), a default IPv6 route via ``::1`` and IPv6 forwarding on. The IPv4 wire addresses stay in
every family: the host's port forwarder reaches the apiserver over them; Kubernetes sees only the
cluster's families (node addresses, Service and pod ranges).

The veth pairs are created directly between the bridge namespace and the node namespace
(``ip -n k8ss-c-net link add veth0 type veth peer name eth0 netns k8ss-c-control-plane``), so no
interface ever appears in the root namespace. Addresses only exist inside the cluster's namespaces.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time

import pytest_k8sstate.node.netns as netns_mod
from pytest_k8sstate.errors import CommandError, ProviderError
from pytest_k8sstate.node.exec import run_command

BRIDGE = "br0"


def bridge_netns(cluster: str) -> str:
    return f"{netns_mod.PREFIX}{cluster}-net"


def node_netns(node: str) -> str:
    return f"{netns_mod.PREFIX}{node}"


def host_ip(subnet: str, host: int) -> str:
    net = ipaddress.ip_network(subnet)
    return str(net.network_address + host)


def _batch(ns: str, lines: list[str]) -> None:
    run_command(
        ["ip", "-n", ns, "-batch", "-"],
        input=("\n".join(lines) + "\n").encode(),
        timeout=20,
        where=f"netns {ns}",
    )


def create_network(
    cluster: str,
    subnet: str,
    nodes: list[tuple[str, str]],
    *,
    subnet6: str = "",
    ips6: list[str] | None = None,
) -> None:
    """Create the bridge namespace and one namespace per ``(netns, ip)`` node, wired to the bridge; with
    ``subnet6``, also node ``k``'s IPv6 address ``ips6[k]`` (bridge ``::1``).

    The caller records the namespace names first, so a failure half-way is cleaned by teardown.
    """
    ips6 = ips6 or []
    if subnet6 and len(ips6) != len(nodes):
        raise ProviderError(f"cluster {cluster!r}: {len(nodes)} nodes but {len(ips6)} IPv6 addresses")
    netns_mod.require_root(f"creating local cluster {cluster!r}")
    prefix = ipaddress.IPv4Network(subnet).prefixlen
    gw = host_ip(subnet, 1)
    br_ns = bridge_netns(cluster)
    for ns in [br_ns, *(n for n, _ in nodes)]:
        if netns_mod.exists(ns):
            raise ProviderError(
                f"network namespace {ns} already exists; a leftover of an earlier cluster? "
                f"remove it with `ip netns delete {ns}` or `k8sstate cluster delete --name {cluster}`"
            )
        run_command(["ip", "netns", "add", ns], timeout=10, where="netns")
    lines = [
        "link set lo up",
        f"link add {BRIDGE} type bridge forward_delay 0",
        f"addr add {gw}/{prefix} dev {BRIDGE}",
        f"link set {BRIDGE} up",
    ]
    if subnet6:
        prefix6 = ipaddress.IPv6Network(subnet6).prefixlen
        lines.insert(3, f"addr add {host_ip(subnet6, 1)}/{prefix6} dev {BRIDGE} nodad")
    for k, (ns, _ip) in enumerate(nodes):
        lines += [
            f"link add veth{k} type veth peer name eth0 netns {ns}",
            f"link set veth{k} master {BRIDGE}",
            f"link set veth{k} up",
        ]
    _batch(br_ns, lines)
    for k, (ns, ip) in enumerate(nodes):
        v6 = (
            [
                f"addr add {ips6[k]}/{prefix6} dev eth0 nodad",
                f"route add default via {host_ip(subnet6, 1)} dev eth0",
            ]
            if subnet6
            else []
        )
        _batch(
            ns,
            [
                "link set lo up",
                f"addr add {ip}/{prefix} dev eth0",
                "link set eth0 up",
                f"route add default via {gw} dev eth0",
                *v6,
            ],
        )
    # Like a kind node: forwarding on (what a CNI-enabled node has). Runs inside each node namespace.
    sysctls = ["net.ipv4.ip_forward=1"]
    if subnet6:
        sysctls += ["net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.all.forwarding=1"]
    procs = [
        subprocess.Popen(  # noqa: S603 - argv list, no shell
            ["ip", "netns", "exec", ns, "sysctl", "-qw", *sysctls],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for ns, _ in nodes
    ]
    errors = []
    for (ns, _), p in zip(nodes, procs, strict=True):
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            errors.append(f"{ns}: sysctl timed out")
            continue
        if p.returncode != 0:
            errors.append(f"{ns}: {err.decode(errors='replace').strip()}")
    if errors:
        raise CommandError(f"setting {' '.join(sysctls)} failed: " + "; ".join(errors))


def delete_netns(names: list[str], timeout: float = 5.0) -> list[str]:
    """Delete the namespaces (node ones first); returns those that could not be removed."""
    left = list(names)
    deadline = time.monotonic() + timeout
    while True:
        for ns in list(left):
            # EBUSY right after the last process died: the mount namespace of `ip netns exec` still
            # pins the bind mount for a moment; retry briefly.
            netns_mod.delete(ns)
            if not netns_mod.exists(ns):
                left.remove(ns)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
