"""When a ``local`` cluster is ready: each probe returns None when done, else why not yet.

The probes feed :func:`pytest_k8sstate.util.poll.wait_until`: the apiserver's ``/readyz``, every Node
Ready (kwok), two ready kube-dns endpoints (coredns pods scheduled and "run" by kwok), and on every node
kube-proxy's rules for the ``kubernetes`` and ``kube-dns`` Services (iptables, nftables or IPVS).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pytest_k8sstate.node.exec import NodeExec
from pytest_k8sstate.providers.local.rest import RestClient

__all__ = ["Expected", "apiserver_not_ready", "dns_endpoints", "nodes_not_ready", "proxy_rules_missing"]

Expected = tuple[str, str, str, str, str, int]
"""A Service port kube-proxy must have programmed: ``(ns, svc, port_name, proto, ep_ip, ep_port)``."""

KUBE_DNS_SLICES = (
    "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
    "?labelSelector=kubernetes.io%2Fservice-name%3Dkube-dns"
)


def apiserver_not_ready(api: RestClient) -> str | None:
    status, body = api.text("/readyz")
    return None if status == 200 else f"/readyz returned {status}: {body.strip()[-300:]}"


def nodes_not_ready(api: RestClient, names: Sequence[str]) -> str | None:
    """None when every Node in ``names`` has the condition Ready=True."""
    status, body = api.request("GET", "/api/v1/nodes")
    if status != 200:
        return f"GET /api/v1/nodes: HTTP {status}"
    ready = set()
    for item in body.get("items", []):
        for c in item.get("status", {}).get("conditions", []) or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                ready.add(item["metadata"]["name"])
    missing = [n for n in names if n not in ready]
    return f"nodes not Ready: {', '.join(missing)}" if missing else None


def dns_endpoints(api: RestClient, want: int = 2) -> tuple[str | None, list[str]]:
    """``(None, sorted endpoint IPs)`` once kube-dns has ``want`` ready endpoints, else ``(why not, [])``."""
    status, body = api.request("GET", KUBE_DNS_SLICES)
    if status != 200:
        return f"GET kube-dns EndpointSlices: HTTP {status}", []
    ips: list[str] = []
    for sl in body.get("items", []):
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                ips.extend(ep.get("addresses") or [])
    if len(ips) < want:
        return (
            f"kube-dns has {len(ips)} ready endpoints of {want} (coredns pods scheduled and run by kwok)",
            [],
        )
    return None, sorted(ips)


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def proxy_rules_missing(exec_: NodeExec, mode: str, expected: Sequence[Expected]) -> str | None:
    """None when the node's rules hold every expected ``(ns, svc, port_name, proto, ep_ip, ep_port)``
    (an IPv6 endpoint in ip6tables / the ``ip6`` table / ``[addr]:port`` of IPVS)."""
    if mode == "nftables":
        for v6 in (False, True):
            why = _nft_missing(exec_, [e for e in expected if (":" in e[4]) == v6], v6)
            if why is not None:
                return why
        return None
    if mode == "ipvs":
        text = exec_.run(["ipvsadm", "-Ln"], check=False, timeout=10).text
        for _ns, svc, _port, _proto, ip, ep_port in expected:
            if _hostport(ip, ep_port) not in text:
                return f"no IPVS real server {_hostport(ip, ep_port)} ({svc}) yet"
        return None
    for save in ("iptables-save", "ip6tables-save"):
        want = [e for e in expected if (":" in e[4]) == (save == "ip6tables-save")]
        if not want:
            continue
        text = exec_.run([save, "-t", "nat"], check=False, timeout=10).text
        for ns, svc, port, _proto, ip, ep_port in want:
            # the comment is quoted by iptables-save unless it has no spaces
            if f"{ns}/{svc}:{port} -> {_hostport(ip, ep_port)}" not in text:
                return (
                    f"no KUBE-SVC rule for {ns}/{svc}:{port} -> {_hostport(ip, ep_port)} in "
                    f"{save.removesuffix('-save')} nat yet"
                )
    return None


def _nft_missing(exec_: NodeExec, expected: Sequence[Expected], v6: bool = False) -> str | None:
    if not expected:
        return None
    family = "ip6" if v6 else "ip"
    res = exec_.run(["nft", "list", "table", family, "kube-proxy"], check=False, timeout=10)
    if res.returncode != 0:
        return f"table {family} kube-proxy not created yet"
    text = res.text
    for ns, svc, port, proto, ip, ep_port in expected:
        # ≤ 1.36: one chain per endpoint (``endpoint-H-ns/svc/proto/port__IP/PORT``); 1.37: the service
        # chain DNATs itself (``dnat to IP:PORT`` or ``numgen random mod N map { 0 : IP . PORT, … }``).
        if f"-{ns}/{svc}/{proto}/{port}__{ip}/{ep_port}" in text:
            continue
        m = re.search(
            rf"chain service-[A-Z0-9]+-{re.escape(f'{ns}/{svc}/{proto}/{port}')} \{{(.*?)\}}\n", text, re.S
        )
        body = m.group(1) if m else ""
        if _hostport(ip, ep_port) not in body and f"{ip} . {ep_port}" not in body:
            return (
                f"no DNAT for {ns}/{svc}:{port} -> {_hostport(ip, ep_port)} in table {family} kube-proxy yet"
            )
    return None
