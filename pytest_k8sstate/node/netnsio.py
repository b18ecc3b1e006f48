"""In-process netlink reads of a node that shares this machine's kernel (``local`` nodes, the host).

A ``local`` node is a network namespace of this machine (:class:`~pytest_k8sstate.node.exec.NetnsExec`),
and so is a kind node container of a local engine (:mod:`~pytest_k8sstate.node.containerns`):
instead of starting ``ip netns exec … python3``/``ip``/``ipset`` for what netlink answers in microseconds,
:func:`in_node` runs a function in a short-lived thread that first joins the node's network namespace
(``setns(2)`` only changes that thread; it ends with the function, so no thread of this process is ever
left in another namespace). Sockets opened there stay bound to that namespace.

What runs there (:func:`fingerprints`): cheap *fingerprints* of the node's parts, used by
:mod:`pytest_k8sstate.node.capture` to reuse the previous capture's parse of a part that did not change:

* ``dump-iptables``/``dump-ip6tables``: a SHA-256 of the family's iptables-nft tables as read over
  netlink (the :mod:`~pytest_k8sstate.node.nfdump` dumper, in-process: no interpreter start on the
  node) — rules, handles and counters: equal digests mean the same ``iptables-save -c`` text, and the
  dump itself is what the capture translates when it changed;
* ``nft``: the nf_tables ruleset generation of the namespace (bumped by every ruleset commit:
  ``iptables-nft``, ``nft``, kube-proxy) + every rule with its counters + the named objects (see
  :func:`_nft_digest`);
* ``links``/``addrs``/``routes``: a SHA-256 of the raw rtnetlink dumps, with the traffic statistics
  (which ``ip -d`` without ``-s`` does not print) left out; any other change — a name, a flag, a
  timer, an address lifetime — changes the digest;
* ``ipsets``: a SHA-256 of the ipset netlink ``LIST`` dump (``""`` when the kernel has no ipset module:
  no sets exist then).

Anything that fails here returns None: the caller then runs the node's commands as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from pytest_k8sstate.errors import CommandTimeout
from pytest_k8sstate.node import containerns, nfdump
from pytest_k8sstate.node.exec import DockerExec, LocalExec, NetnsExec, NodeExec

__all__ = ["dump_digest", "fingerprints", "in_node", "netns_id", "nft_generation", "nft_tables"]

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"
_libc: ctypes.CDLL | None = None


def _setns(path: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _netns_path(exec: NodeExec) -> str | None:
    """The namespace file to join; ``""`` for this process's own namespace; None: not on this kernel."""
    # exact types only: a subclass may run the node's commands differently (another PATH, a wrapper),
    # and then what this process reads is not what the node's commands would print
    if type(exec) is NetnsExec:
        return os.path.join(_NETNS_DIR, exec.netns)
    if type(exec) is LocalExec:
        return ""
    if type(exec) is DockerExec:  # a node container of a local engine (node/containerns.py)
        return containerns.netns_path(exec)
    return None


def netns_id(exec: NodeExec) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the node's namespace (a recreated namespace of the same name differs);
    None when the node is not a namespace of this machine or it is gone."""
    path = _netns_path(exec)
    if path is None:
        return None
    try:
        st = os.stat(path or f"/proc/{os.getpid()}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def in_node(exec: NodeExec, fn: Callable[[], T], timeout: float) -> T | None:
    """``fn()`` run inside the node's network namespace; None when that is not possible (not a local
    node, no privilege, ``fn`` raised OSError). A ``fn`` that does not return in ``timeout`` seconds is a
    :class:`~pytest_k8sstate.errors.CommandTimeout` (its thread, a daemon, is abandoned)."""
    path = _netns_path(exec)
    if path is None:
        return None
    box: list[T] = []

    def work() -> None:
        try:
            if path:
                _setns(path)
            box.append(fn())
        except OSError:
            pass  # no privilege / no netlink family: the caller falls back to the node's commands

    t = threading.Thread(target=work, name=f"k8ss-netns-{exec.node}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise CommandTimeout(f"node {exec.node}: netlink read did not finish within {timeout:g}s")
    return box[0] if box else None


# ------------------------------------------------------------------------------------------ netlink
_NLM_F_REQUEST = 1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_RTM_GETLINK, _RTM_GETADDR, _RTM_GETROUTE = 18, 22, 26
_IFLA_STATS, _IFLA_STATS64, _IFLA_AF_SPEC = 7, 23, 26
_IFLA_INET6_STATS, _IFLA_INET6_CACHEINFO, _IFLA_INET6_ICMP6STATS = 3, 5, 6
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_IPSET = 6
_IPSET_CMD_LIST = 7
_IPSET_ATTR_PROTOCOL = 1


def _dump(sock: socket.socket, mtype: int, body: bytes, seq: int) -> list[bytes]:
    """One dump request; every reply message (without DONE). OSError on a netlink error."""
    sock.send(struct.pack("=IHHII", 16 + len(body), mtype, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0) + body)
    out: list[bytes] = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise OSError("netlink socket closed")
        pos = 0
        while pos + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, pos)
            if length < 16:
                raise OSError("malformed netlink message")
            if kind == _NLMSG_DONE:
                return out
            if kind == _NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, pos + 16)[0]
                raise OSError(err, os.strerror(err) if err else "netlink error")
            out.append(data[pos : pos + length])
            pos += (length + 3) & ~3


def _attrs(data: bytes, start: int) -> list[tuple[int, bytes]]:
    out = []
    pos = start
    while pos + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, pos)
        if n < 4:
            break
        out.append((kind, data[pos : pos + n]))
        pos += (n + 3) & ~3
    return out


def _link_identity(msg: bytes) -> bytes:
    """A link message without its traffic statistics (``ip -d`` without ``-s`` prints none of them)."""
    keep = [msg[16:32]]  # ifinfomsg
    for kind, raw in _attrs(msg, 32):
        k = kind & 0x3FFF
        if k in (_IFLA_STATS, _IFLA_STATS64):
            continue
        if k == _IFLA_AF_SPEC:
            for fam_kind, fam_raw in _attrs(raw, 4):
                if fam_kind & 0x3FFF == socket.AF_INET6:
                    keep.append(b"".join(r for t, r in _attrs(fam_raw, 4) if t & 0x3FFF not in _V6_VOLATILE))
                else:
                    keep.append(fam_raw)
            continue
        keep.append(raw)
    return b"".join(keep)


_V6_VOLATILE = (_IFLA_INET6_STATS, _IFLA_INET6_CACHEINFO, _IFLA_INET6_ICMP6STATS)


def _rtnl_digests() -> dict[str, str]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        links = _dump(s, _RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0), 1)
        link_h = hashlib.sha256()
        for m in links:
            link_h.update(_link_identity(m))
        addrs = _dump(s, _RTM_GETADDR, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0), 2)
        routes = _dump(s, _RTM_GETROUTE, struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0), 3)
    link_d = link_h.hexdigest()
    # ``ip`` prints interface names in addresses and routes: a renamed link changes those outputs too
    addr_h = hashlib.sha256(link_d.encode())
    for m in addrs:
        addr_h.update(m[16:])
    route_h = hashlib.sha256(link_d.encode())
    for m in routes:
        route_h.update(m[16:])
    return {"links": link_d, "addrs": addr_h.hexdigest(), "routes": route_h.hexdigest()}


def _ipset_digest() -> str:
    if not os.path.exists("/sys/module/ip_set"):
        return ""  # no ipset module in this kernel: no sets in any namespace
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as s:
        s.bind((0, 0))
        attr = struct.pack("=HHB3x", 5, _IPSET_ATTR_PROTOCOL, 6)
        body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attr
        msgs = _dump(s, (_NFNL_SUBSYS_IPSET << 8) | _IPSET_CMD_LIST, body, 1)
    h = hashlib.sha256(b"ipset")
    for m in msgs:
        h.update(m[16:])
    return h.hexdigest()


def _gen_id(payload: bytes) -> str:
    """NFTA_GEN_ID of a NEWGEN reply (the other attributes name the asking thread, not the ruleset)."""
    for kind, raw in _attrs(payload, 0):
        if kind & 0x3FFF == 1 and len(raw) == 8:
            return raw[4:8].hex()
    raise OSError("no generation id in the nf_tables NEWGEN reply")


def _iptables_dump(family: int) -> tuple[bytes, int]:
    """``(what nfdump prints, number of chains)`` for one family's iptables-nft tables."""
    d = nfdump._Dumper(family)
    try:
        for _ in range(5):
            gen = d.generation()
            msgs = _tables_of(d)
            if d.generation() == gen:
                chains = sum(1 for m in msgs if struct.unpack_from("=H", m, 4)[0] == _NFT_NEWCHAIN)
                return nfdump.HEADER + str(family).encode() + b"\n" + b"".join(msgs), chains
        raise OSError("the nf_tables ruleset changed during each of 5 dumps")
    finally:
        d.sock.close()


_NFT_NEWCHAIN = (10 << 8) | 3
_WHOLE_DUMP_MAX_CHAINS = 2000
"""Up to this many chains the family's rules are read in one dump (three requests in all); above, one
dump per chain, as :mod:`~pytest_k8sstate.node.nfdump` does (a whole dump restarts its walk for every
32 KiB batch: quadratic at tens of thousands of rules)."""


def _tables_of(d: nfdump._Dumper) -> list[bytes]:
    """The iptables tables of ``d``'s family: tables, chains, then rules (of those tables only)."""
    value = nfdump._attr_value
    tables = [m for m in d.request(nfdump._MSG["GETTABLE"]) if value(m, 1) in nfdump._TABLES]
    names = {value(m, 1) for m in tables}
    chains = [m for m in d.request(nfdump._MSG["GETCHAIN"]) if value(m, 1) in names]
    if len(chains) > _WHOLE_DUMP_MAX_CHAINS:
        return d.snapshot(0)
    return tables + chains + [m for m in d.request(nfdump._MSG["GETRULE"]) if value(m, 1) in names]


def dump_digest(data: bytes) -> str:
    """SHA-256 of an nfdump output's messages without their netlink and nfgenmsg headers (sequence
    number, port id and the generation's low bits differ between two reads of the same tables); rule
    handles and counters are kept, so equal digests mean the same ``iptables-save -c`` text."""
    h = hashlib.sha256()
    pos = data.index(b"\n") + 1
    while pos + 20 <= len(data):
        (length,) = struct.unpack_from("=I", data, pos)
        if length < 20:
            break
        h.update(data[pos + 20 : pos + length])
        pos += (length + 3) & ~3
    return h.hexdigest()


def _nft_digest(covered: dict[int, str]) -> str:
    """What ``nft list ruleset`` prints, as a digest: the generation (tables, chains, sets and their
    elements change it), every rule with its counters (the iptables tables of a family in ``covered``
    by that family's dump digest, every other table by a dump of its rules) and the named objects
    (counters, quotas: their values change without a new generation). Elements a packet adds to a
    ``dynamic`` set are not covered (:mod:`~pytest_k8sstate.node.reuse` never reuses such a ruleset)."""
    d = nfdump._Dumper(socket.AF_UNSPEC)
    try:
        for _ in range(5):
            gen = d.generation()
            h = hashlib.sha256(_gen_id(gen).encode())
            for fam, digest in sorted(covered.items()):
                h.update(b"%d %s\n" % (fam, digest.encode()))
            for m in d.request(nfdump._MSG["GETTABLE"]):
                fam, name = m[16], nfdump._attr_value(m, 1)
                if fam in covered and name in nfdump._TABLES:
                    continue
                d.family = fam
                rules = d.request(nfdump._MSG["GETRULE"], nfdump._attr(1, name + b"\0"))
                h.update(b"table %d %s\n" % (fam, name))
                for r in rules:
                    h.update(r[20:])
            d.family = socket.AF_UNSPEC
            for m in d.request(_NFT_GETOBJ):
                h.update(m[20:])
            if d.generation() == gen:
                return h.hexdigest()
        raise OSError("the nf_tables ruleset changed during each of 5 reads")
    finally:
        d.sock.close()


_NFT_GETOBJ = 19


def _fingerprints(
    families: dict[str, int], nft_exact: bool, cheap: bool
) -> tuple[dict[str, str], dict[str, tuple[bytes, int]]]:
    out: dict[str, str] = {}
    dumps: dict[str, tuple[bytes, int]] = {}
    if cheap:
        try:
            out["nft-gen"] = _nft_generation()
        except OSError:
            pass
        try:
            out.update(_rtnl_digests())
        except OSError:
            pass
        try:
            out["ipsets"] = _ipset_digest()
        except OSError:
            pass
    for part, family in families.items():
        try:
            dumps[part] = _iptables_dump(family)
        except OSError:
            continue
        out[f"dump-{part}"] = dump_digest(dumps[part][0])
    if nft_exact:
        try:
            out["nft"] = _nft_digest({families[p]: out[f"dump-{p}"] for p in dumps})
        except OSError:
            pass
    return out, dumps


def fingerprints(
    exec: NodeExec,
    timeout: float = 10.0,
    families: dict[str, int] | None = None,
    *,
    nft_exact: bool = True,
    cheap: bool = True,
) -> tuple[dict[str, str], dict[str, tuple[bytes, int]]] | None:
    """The node's part fingerprints (see the module doc) and, for each of ``families`` (part → address
    family), its iptables-nft tables as ``nfdump`` prints them with their number of chains; None when
    they cannot be read here. ``cheap``: the generation, rtnetlink and ipset digests (about a
    millisecond); ``nft_exact``: the ``nft`` digest (every rule: costly for large rulesets)."""
    fams = dict(families or {})
    return in_node(exec, lambda: _fingerprints(fams, nft_exact, cheap), timeout)


NftChainInfo = tuple[str, int | None, int | None, str | None]
"""A base chain as the table listing reads it: name, hook number, priority and type."""
NftTableInfo = tuple[int, str, int, int, int, list[NftChainInfo]]
"""A table as the listing reads it: address family, name, flags, use count (its chains, sets, objects and
flowtables), number of chains, and its base chains."""


def _u32(raw: bytes | None, signed: bool = False) -> int | None:
    return int.from_bytes(raw[:4], "big", signed=signed) if raw is not None and len(raw) >= 4 else None


def _top(msg: bytes) -> dict[int, bytes]:
    return {k & 0x3FFF: raw[4:] for k, raw in _attrs(msg, 20)}


def _tables(d: nfdump._Dumper) -> list[tuple[int, bytes, int, int]]:
    """Every table ``d``'s family holds: address family, name, flags and use count."""
    out = []
    for m in d.request(nfdump._MSG["GETTABLE"]):
        a = _top(m)
        out.append((m[16], a.get(1, b"").rstrip(b"\0"), _u32(a.get(2)) or 0, _u32(a.get(3)) or 0))
    return out


def _nft_tables() -> tuple[str, list[NftTableInfo]]:
    value = nfdump._attr_value
    d = nfdump._Dumper(socket.AF_UNSPEC)
    try:
        for _ in range(5):
            gen = d.generation()
            tables = _tables(d)
            counts: dict[tuple[int, bytes], int] = {}
            bases: dict[tuple[int, bytes], list[NftChainInfo]] = {}
            for m in d.request(nfdump._MSG["GETCHAIN"]):
                key = (m[16], value(m, 1))
                counts[key] = counts.get(key, 0) + 1
                if not value(m, 7):
                    continue  # no type: a regular chain (counted, nothing else to check)
                a = _top(m)
                h = {k & 0x3FFF: raw[4:] for k, raw in _attrs(a.get(4, b""), 0)}
                bases.setdefault(key, []).append(
                    (
                        a.get(3, b"").rstrip(b"\0").decode("utf-8", "replace"),
                        _u32(h.get(1)),
                        _u32(h.get(2), signed=True),
                        a.get(7, b"").rstrip(b"\0").decode("utf-8", "replace"),
                    )
                )
            if d.generation() == gen:
                out = [
                    (
                        f,
                        n.decode("utf-8", "replace"),
                        flags,
                        use,
                        counts.get((f, n), 0),
                        bases.get((f, n), []),
                    )
                    for f, n, flags, use in tables
                ]
                return _gen_id(gen), out
        raise OSError("the nf_tables ruleset changed during each of 5 reads")
    finally:
        d.sock.close()


def _iptables_sizes() -> dict[int, int]:
    d = nfdump._Dumper(socket.AF_UNSPEC)
    try:
        out: dict[int, int] = {}
        for fam, name, _flags, use in _tables(d):
            if name in nfdump._TABLES:
                out[fam] = out.get(fam, 0) + use
        return out
    finally:
        d.sock.close()


def iptables_sizes(exec: NodeExec, timeout: float = 10.0) -> dict[int, int] | None:
    """Address family → the use count of its iptables tables (raw, mangle, filter, nat, security): their
    chains, and the sets and objects iptables never adds there; how large a family is without reading
    its rules. None when it cannot be read here."""
    return in_node(exec, _iptables_sizes, timeout)


def nft_tables(exec: NodeExec, timeout: float = 10.0) -> tuple[str, list[NftTableInfo]] | None:
    """The nf_tables ruleset generation and every table of the node (:data:`NftTableInfo`), read at that
    generation; None when it cannot be read here."""
    return in_node(exec, _nft_tables, timeout)


def _nft_generation() -> str:
    d = nfdump._Dumper(socket.AF_UNSPEC)
    try:
        return _gen_id(d.generation())
    finally:
        d.sock.close()


def nft_generation(exec: NodeExec, timeout: float = 10.0) -> str | None:
    """The node's nf_tables ruleset generation (bumped by every commit); None when it cannot be read."""
    return in_node(exec, _nft_generation, timeout)
