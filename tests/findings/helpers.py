"""Small helpers for the seed article's findings (tests/findings/): manifests, kube-proxy chain names,
waiting for kube-proxy, reading captured rules, tracing. Generally useful ones are requests to the
plugin's owners (see docs/findings.md)."""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from pytest_k8sstate.parse.ipvs import VirtualServer
from pytest_k8sstate.trace import Packet, TraceResult, trace

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests" / "findings"

CLUSTER_CIDR = "10.244.0.0/16"  # kubeadm's (and the local provider's) pod network
IN_CLUSTER_SRC = "10.244.255.250"  # a source inside the cluster CIDR that is no endpoint
OUTSIDE_SRC = "203.0.113.10"  # a client outside the cluster (TEST-NET-3; no packet is ever sent)
SYNC_TIMEOUT = 60.0
OUR_OBJECTS = re.compile(r"default/f\d\d[a-z]?-")

T = TypeVar("T")


# ------------------------------------------------------------------------------------------- manifests


def manifest(name: str) -> Path:
    """``manifests/findings/<name>``; fails clearly when the file is missing."""
    path = MANIFESTS / name
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest {path} does not exist; see {MANIFESTS} for the findings' manifests"
        )
    return path


def load_manifest(name: str) -> list[dict[str, Any]]:
    """The documents of a manifest as dicts (to change a field before applying it again)."""
    import yaml

    with manifest(name).open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


# ------------------------------------------------------------------------------------------- polling


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float = SYNC_TIMEOUT, interval: float = 0.25
) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------- kube-proxy names


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(service_port: str, proto: str = "tcp", prefix: str = "KUBE-SVC-") -> str:
    """kube-proxy's chain name for ``"ns/name:port"``: ``KUBE-SVC-`` + base32(sha256(name + proto))[:16].

    The same hash with ``KUBE-EXT-`` / ``KUBE-FW-`` / ``KUBE-SVL-`` prefixes names the other
    per-service chains.
    """
    return prefix + _hash16(service_port + proto)


def sep_chain(service_port: str, endpoint: str, proto: str = "tcp") -> str:
    """``KUBE-SEP-`` + base32(sha256("ns/name:port" + proto + "IP:PORT"))[:16]."""
    return "KUBE-SEP-" + _hash16(service_port + proto + endpoint)


# ------------------------------------------------------------------------------------------- node state


def node_names(cluster: Any) -> list[str]:
    return [n.name for n in cluster.nodes]


def local_ips(cluster: Any, node: str) -> frozenset[str]:
    """The node's own addresses as the tracer needs them (``addrtype LOCAL``)."""
    return frozenset({cluster.node(node).ip, "127.0.0.1"})


def iptables_of(snapshot: Any, node: str) -> Any:
    ns = snapshot.nodes[node]
    if ns.iptables is None:
        raise AssertionError(
            f"snapshot {snapshot.label!r} has no iptables state for node {node}: {ns.errors}"
        )
    return ns.iptables


def nft_of(snapshot: Any, node: str) -> Any:
    ns = snapshot.nodes[node]
    if ns.nft is None:
        raise AssertionError(
            f"snapshot {snapshot.label!r} has no nftables state for node {node}: {ns.errors}"
        )
    return ns.nft


def nat_chain(snapshot: Any, node: str, chain: str) -> list[Any]:
    """Rules of a nat chain (``[]`` when the chain does not exist)."""
    nat = iptables_of(snapshot, node).tables.get("nat")
    if nat is None or chain not in nat.chains:
        return []
    return list(nat.chains[chain].rules)


def chain_specs(snapshot: Any, node: str, table: str, chain: str) -> list[str]:
    t = iptables_of(snapshot, node).tables.get(table)
    if t is None or chain not in t.chains:
        return []
    return [r.spec for r in t.chains[chain].rules]


def rules_mentioning(snapshot: Any, node: str, needle: str) -> list[tuple[str, str, str]]:
    """Every iptables rule (table, chain, spec) whose chain or text contains ``needle``."""
    out: list[tuple[str, str, str]] = []
    for tname, table in iptables_of(snapshot, node).tables.items():
        for cname, chain in table.chains.items():
            for rule in chain.rules:
                if needle in cname or needle in rule.spec:
                    out.append((tname, cname, rule.spec))
    return out


def probability_of(spec: str) -> str | None:
    """The ``--probability`` text of a rule spec (``None`` for an unconditional rule)."""
    m = re.search(r"--probability (\S+)", spec)
    return m.group(1) if m else None


def jump_target(spec: str) -> str | None:
    m = re.search(r"(?:^| )-[jg] (\S+)", spec)
    return m.group(1) if m else None


def endpoint_jumps(snapshot: Any, node: str, chain: str) -> list[tuple[str | None, str]]:
    """``(probability text or None, KUBE-SEP-… target)`` for each endpoint jump of a KUBE-SVC chain."""
    out: list[tuple[str | None, str]] = []
    for spec in chain_specs(snapshot, node, "nat", chain):
        target = jump_target(spec)
        if target and target.startswith("KUBE-SEP-"):
            out.append((probability_of(spec), target))
    return out


# ------------------------------------------------------------------------------------------- tracing


def trace_on(
    snapshot: Any,
    cluster: Any,
    node: str,
    dst: str,
    dport: int,
    *,
    proto: str = "tcp",
    src: str = OUTSIDE_SRC,
    mode: str | None = None,
) -> TraceResult:
    """Trace a new connection to ``dst:dport`` through ``node``'s captured rules.

    ``mode`` picks the ruleset (``iptables`` or ``nftables``; default: the cluster's proxy mode).
    """
    mode = mode or cluster.proxy_mode
    ruleset = nft_of(snapshot, node) if mode == "nftables" else iptables_of(snapshot, node)
    packet = Packet(dst=dst, dport=dport, proto=proto, src=src, local_ips=local_ips(cluster, node))
    return trace(ruleset, packet)


def endpoint_split(result: TraceResult) -> dict[str | None, Fraction]:
    return dict(result.endpoints)


def close_to(p: Fraction, q: Fraction, tol: Fraction = Fraction(1, 10**8)) -> bool:
    """iptables stores probabilities as p·2³¹ (0.33333333349 for 1/3): equal within ``tol``."""
    return abs(p - q) <= tol


# ------------------------------------------------------------------------------------------- kube-proxy sync


def proxy_dump(cluster: Any, node: str, mode: str | None = None) -> str:
    """What kube-proxy wrote on ``node``: ``iptables-save`` (iptables mode) or the ``ip kube-proxy`` table."""
    mode = mode or cluster.proxy_mode
    ex = cluster.node(node).exec
    if mode == "nftables":
        res = ex.run(["nft", "list", "table", "ip", "kube-proxy"], check=False, timeout=20)
        return res.text if res.returncode == 0 else ""
    return ex.run(["iptables-save"], timeout=20).text


def nft_chain_blocks(dump: str) -> dict[str, list[str]]:
    """``nft list table`` text → chain name → its rule lines (sets and maps are skipped)."""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in dump.splitlines():
        text = line.strip()
        m = re.match(r"chain (\S+) \{$", text)
        if m:
            current = m.group(1)
            blocks[current] = []
        elif text == "}":
            current = None
        elif current is not None and text and not text.startswith(("type ", "comment ")):
            blocks[current].append(text)
    return blocks


_IP_DOT_PORT = re.compile(r"\b\d+\.\d+\.\d+\.\d+ \. \d+\b")  # "10.244.1.2 . 8080" (a numgen map entry)
_IP_COLON_PORT = re.compile(r"\bdnat (?:ip )?to \d+\.\d+\.\d+\.\d+:\d+")  # "dnat to 10.244.1.2:8080"


def count_endpoints_in_dump(dump: str, service: str, mode: str) -> int:
    """How many endpoint DNATs kube-proxy wrote for ``ns/name`` (all ports).

    nftables mode (1.37): the ClusterIP chain ``service-HASH-ns/name/proto/port`` holds one rule, either
    ``dnat to IP:PORT`` (one endpoint) or ``dnat ip to numgen random mod N map { 0 : IP . PORT, … }``;
    older kube-proxy versions used one ``endpoint-HASH-ns/name/…`` chain per endpoint — both are counted.
    """
    ns, name = service.split("/", 1)
    if mode == "nftables":
        n = 0
        for chain, rules in nft_chain_blocks(dump).items():
            dnats = [r for r in rules if " dnat " in f" {r}"]
            if re.match(rf"service-\w+-{re.escape(ns)}/{re.escape(name)}/", chain):
                n += sum(len(_IP_DOT_PORT.findall(r)) + len(_IP_COLON_PORT.findall(r)) for r in dnats)
            elif re.match(rf"endpoint-\w+-{re.escape(ns)}/{re.escape(name)}/", chain) and dnats:
                n += 1
        return n
    n = 0
    for line in dump.splitlines():
        if (
            line.startswith("-A KUBE-SEP-")
            and "-j DNAT" in line
            and re.search(rf'--comment "?{re.escape(ns)}/{re.escape(name)}[:" ]', line)
        ):
            n += 1
    return n


def wait_proxy_endpoints(
    cluster: Any,
    service: str,
    count: int,
    *,
    nodes: Iterable[str] | None = None,
    timeout: float = SYNC_TIMEOUT,
    mode: str | None = None,
) -> None:
    """Wait until every node's kube-proxy programmed exactly ``count`` endpoint DNATs for ``ns/name``."""
    mode = mode or cluster.proxy_mode
    names = list(nodes) if nodes is not None else node_names(cluster)
    seen: dict[str, int] = {}

    def synced() -> bool:
        for n in names:
            seen[n] = count_endpoints_in_dump(proxy_dump(cluster, n, mode), service, mode)
        return all(v == count for v in seen.values())

    try:
        wait_until(f"kube-proxy ({mode}) to program {count} endpoint(s) of {service}", synced, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; endpoint DNATs per node: {seen}") from None


def wait_proxy_text(
    cluster: Any,
    what: str,
    predicate: Callable[[str], bool],
    *,
    nodes: Iterable[str] | None = None,
    timeout: float = SYNC_TIMEOUT,
    mode: str | None = None,
) -> None:
    """Wait until ``predicate(dump)`` holds on every node."""
    names = list(nodes) if nodes is not None else node_names(cluster)
    wait_until(what, lambda: all(predicate(proxy_dump(cluster, n, mode)) for n in names), timeout)


def leftover_rules(cluster: Any) -> dict[str, list[str]]:
    """Per node, what kube-proxy still has for a findings object (``default/fNN-``): iptables lines; in
    nftables mode map elements and non-empty chains (kube-proxy flushes a stale chain at once but deletes
    it only at a later sync, so an empty one is not a leftover)."""
    out: dict[str, list[str]] = {}
    for n in node_names(cluster):
        dump = proxy_dump(cluster, n)
        if cluster.proxy_mode == "nftables":
            lines = [
                line.strip()
                for line in dump.splitlines()
                if OUR_OBJECTS.search(line) and not line.strip().startswith("chain ")
            ]
            lines += [
                f"chain {c}: {rules[0]}"
                for c, rules in nft_chain_blocks(dump).items()
                if rules and OUR_OBJECTS.search(c)
            ]
        else:
            lines = [line for line in dump.splitlines() if OUR_OBJECTS.search(line)]
        if lines:
            out[n] = lines
    return out


OUR_PODS = re.compile(r"^f\d\d[a-z]?-")


def wait_settled(cluster: Any, k8s_api: Any, when: str) -> None:
    """Wait until no findings pod is left and no kube-proxy rule on any node mentions a findings object."""
    left: dict[str, list[str]] = {}

    def clean() -> bool:
        left.clear()
        pods = [p["metadata"]["name"] for p in k8s_api.list("pod") if OUR_PODS.match(p["metadata"]["name"])]
        if pods:
            left["pods"] = pods
            return False
        left.update(leftover_rules(cluster))
        return not left

    try:
        wait_until(f"the findings' objects to be gone {when}", clean, timeout=SYNC_TIMEOUT)
    except AssertionError as exc:
        sample = {n: lines[:3] for n, lines in left.items()}
        raise AssertionError(f"{exc}; still present: {sample}") from None


# ------------------------------------------------------------------------------------------- IPVS


def ipvs_virtual_server(ns: Any, address: str, port: int, protocol: str = "TCP") -> VirtualServer:
    """The node's one IPVS virtual server ``protocol address:port`` (compared field by field)."""
    servers = [vs for vs in ns.ipvs or [] if (vs.protocol, vs.address, vs.port) == (protocol, address, port)]
    if len(servers) != 1:
        keys = [vs.key for vs in ns.ipvs or []]
        raise AssertionError(
            f"{len(servers)} IPVS virtual servers {protocol} {address}:{port}; node has {keys}"
        )
    return servers[0]


def interface_addresses(ns: Any, ifname: str) -> set[str]:
    """The addresses the node's interface ``ifname`` holds (captured ``ip -j addr``)."""
    return {a["local"] for a in ns.addrs if a["ifname"] == ifname}


def netfilter_changes(nd: Any) -> list[str]:
    """Every netfilter change of a NodeDiff as one text line each (iptables and nftables)."""
    lines = [f"chain+ {t} {c}" for t, c in nd.chains_added]
    lines += [f"chain- {t} {c}" for t, c in nd.chains_removed]
    lines += [f"rule+ {t} {c} {s}" for t, c, s in nd.rules_added]
    lines += [f"rule- {t} {c} {s}" for t, c, s in nd.rules_removed]
    lines += [f"nft chain+ {t} {c}" for t, c in nd.nft_chains_added]
    lines += [f"nft chain- {t} {c}" for t, c in nd.nft_chains_removed]
    lines += [f"nft rule+ {t} {c} {r}" for t, c, r in nd.nft_rules_added]
    lines += [f"nft rule- {t} {c} {r}" for t, c, r in nd.nft_rules_removed]
    lines += [f"nft elem+ {t} {s} {e}" for t, s, e in nd.nft_elements_added]
    lines += [f"nft elem- {t} {s} {e}" for t, s, e in nd.nft_elements_removed]
    return lines


def foreign_netfilter_changes(nd: Any, marks: Iterable[str]) -> list[str]:
    """Netfilter changes of a NodeDiff that mention none of ``marks`` (a barrier Service's name and chains).

    Fails when there is no change at all: the barrier itself must have produced some.
    """
    lines = netfilter_changes(nd)
    if not lines:
        raise AssertionError("no netfilter change at all: the barrier Service was not captured")
    marks = list(marks)
    return [line for line in lines if not any(m in line for m in marks)]


# Creates nfacct counters (``nfnetlink_acct``, NFNL_MSG_ACCT_NEW) by name in the current network namespace,
# as kube-proxy does at start-up: rules with ``-m nfacct --nfacct-name X`` only load when counter X exists.
_NFACCT_ADD = """
import socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
for seq, name in enumerate(sys.argv[1:], 1):
    raw = name.encode() + b"\\0"
    attr = struct.pack("=HH", 4 + len(raw), 1) + raw  # NFACCT_NAME
    attr += b"\\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", 0, 0, 0) + attr  # nfgenmsg: AF_UNSPEC, NFNETLINK_V0
    # (NFNL_SUBSYS_ACCT << 8) | NFNL_MSG_ACCT_NEW; NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
    s.sendto(struct.pack("=IHHII", 16 + len(body), 0x700, 0x405, seq, 0) + body, (0, 0))
    err = struct.unpack_from("=i", s.recv(65536), 16)[0]
    if err not in (0, -17):  # 0 = created, -EEXIST = already there
        sys.exit(f"creating nfacct counter {name!r} failed: errno {-err}")
"""


def add_nfacct_counters(ns_exec: Any, dump: str) -> list[str]:
    """Create, inside ``ns_exec``'s namespace, the nfacct counters an ``iptables-save`` dump refers to."""
    names = sorted(set(re.findall(r"--nfacct-name\s+(\S+)", dump)))
    if names:
        ns_exec.run([sys.executable, "-c", _NFACCT_ADD, *names], timeout=20)
    return names


# ------------------------------------------------------------------------------------------- etcd


def added_keys(diff: Any, *, include_ignored: bool = True) -> list[str]:
    """Added etcd keys (by default also the ones the default view hides: events, leases)."""
    return sorted(c.key for c in diff.etcd_added(include_ignored=include_ignored))


def removed_keys(diff: Any, *, include_ignored: bool = True) -> list[str]:
    return sorted(c.key for c in diff.etcd_removed(include_ignored=include_ignored))


def modified_keys(diff: Any, *, include_ignored: bool = True) -> list[str]:
    return sorted(c.key for c in diff.etcd_modified(include_ignored=include_ignored))


def without_noise(keys: Iterable[str]) -> list[str]:
    """Drop heartbeat keys (leases) that change on their own while a test runs."""
    return [k for k in keys if not k.startswith(("/registry/leases/", "/registry/masterleases/"))]


def split_events(keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """(event keys, other keys)."""
    ev: list[str] = []
    other: list[str] = []
    for k in keys:
        (ev if k.startswith("/registry/events/") else other).append(k)
    return ev, other


def stores_ipaddresses(snapshot: Any) -> bool:
    """Whether this apiserver keeps an IPAddress object per ClusterIP (MultiCIDRServiceAllocator, GA 1.33)."""
    return any(k.startswith("/registry/ipaddresses/") for k in snapshot.etcd.entries)
